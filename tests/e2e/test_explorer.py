"""The explorer page in a real headless Chromium against a real server."""

import httpx

from tests.browser import ARTIFACTS, CHROMIUM, FLAGS  # noqa: F401  (the browser fixture: tests/conftest.py)


def natural_width(page, selector: str) -> int:
    return page.eval_on_selector(selector, "img => img.complete ? img.naturalWidth : 0")


def wait_for_image(page, selector: str) -> None:
    page.wait_for_function(
        "s => { const img = document.querySelector(s); return img.src && img.complete && img.naturalWidth > 0; }",
        arg=selector,
        timeout=60_000,
    )


def explain_calls(server) -> float:
    prefix = 'mindscope_requests_total{method="POST",route="/explain/integrated-gradients",status="200"}'
    lines = httpx.get(f"{server.base_url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_explorer_shows_prediction_layers_and_explanations(browser, server, validation_sample):
    path = validation_sample[2][0]
    expected = httpx.post(f"{server.base_url}/predict", files={"file": ("x.jpg", path.read_bytes())}).json()
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#label", timeout=60_000)
    assert page.text_content("#label") == expected["label"]
    for selector in ("#activations", "#animation", "#ig", "#interior"):
        wait_for_image(page, selector)
    page.wait_for_function("() => document.querySelector('#completeness')?.textContent.includes('delta')")
    assert "64 steps" in page.text_content("#completeness")

    first_grid = page.get_attribute("#activations", "src")
    page.eval_on_selector("#layer", "el => { el.value = '6'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("s => document.querySelector('#activations')?.src !== s", arg=first_grid)
    wait_for_image(page, "#activations")
    assert page.text_content("#layer-name") == "conv6"

    page.select_option("#target", "3")
    page.fill("#param-steps", "16")
    explained = explain_calls(server)
    page.click("#explain")
    page.wait_for_function("() => document.querySelector('#completeness')?.textContent.includes('16 steps')")
    assert '"cat"' in page.text_content("#completeness")
    assert explain_calls(server) == explained + 1  # the picture and its completeness line from one call
    page.click("[data-demo=checker]")
    page.wait_for_function("() => document.querySelector('#prediction')?.textContent.includes('%')")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
    assert errors == []

    page.close()


def test_before_any_upload_nothing_shows_broken(browser, server):
    page = browser.new_page()
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    shown = page.eval_on_selector_all(
        "img", "imgs => imgs.filter(i => getComputedStyle(i).display !== 'none').map(i => [i.id, i.naturalWidth])"
    )
    assert shown == [["histograms", shown[0][1]]] and shown[0][1] > 0  # only the histograms, drawn
    page.close()


def test_errors_show_beside_their_control_and_clear_on_success(browser, server, validation_sample):
    page = browser.new_page()
    page.goto(server.base_url + "/")
    page.wait_for_function(
        "() => Number(document.querySelector('#param-steps')?.max) > 2"
    )  # the cap, from GET /explain
    cap = int(page.get_attribute("#param-steps", "max"))
    listing = httpx.get(f"{server.base_url}/explain").json()["methods"]
    ig = next(m for m in listing if m["name"] == "integrated-gradients")
    assert cap == next(p for p in ig["parameters"] if p["name"] == "steps")["schema"]["maximum"]
    methods = page.eval_on_selector_all("#param-method option", "options => options.map(o => o.value)")
    assert "riemann_left" in methods and "gauss_legendre" in methods
    page.set_input_files("#file", str(validation_sample[2][0]))
    wait_for_image(page, "#ig")
    wait_for_image(page, "#interior")
    page.fill("#param-steps", "1")
    page.click("#explain")
    page.wait_for_selector("#explain-error", state="visible")
    assert "steps must be between 2 and" in page.text_content("#explain-error")
    box = page.locator("#explain-error").bounding_box()
    button = page.locator("#explain").bounding_box()
    assert box and button and 0 < box["y"] - button["y"] < 200  # right under the button, not at the page top
    page.fill("#param-steps", "16")
    page.click("#explain")
    page.wait_for_selector("#explain-error", state="hidden")
    assert page.is_hidden("#prediction-error") and page.is_hidden("#activations-error")
    # The interior-gradient strip is shown near its own size, so its labels stay readable.
    scale = page.eval_on_selector("#interior", "img => img.clientWidth / img.naturalWidth")
    assert scale > 0.75
    page.close()


def test_api_docs_work_offline(browser, server):
    """Swagger UI and ReDoc come from the installed package; this browser reaches nothing but the server."""
    page = browser.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url)
            if server.base_url not in request.url and request.resource_type != "image"  # ReDoc's footer logo
            else None
        ),
    )
    page.goto(server.base_url + "/docs")
    page.wait_for_selector(".opblock", timeout=60_000)
    operations = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent)")
    assert "/predict" in "".join(operations) and len(operations) >= 10
    page.goto(server.base_url + "/redoc")
    page.wait_for_function("() => document.body.innerText.includes('/explain/integrated-gradients')", timeout=60_000)
    assert outside == []
    page.close()


def test_the_model_picker_sends_every_call_to_the_chosen_version(browser, server, validation_sample):
    path = validation_sample[2][0]
    oldest = httpx.post(f"{server.base_url}/predict?version=1", files={"file": ("x.jpg", path.read_bytes())}).json()
    page = browser.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    assert "(default)" in page.eval_on_selector("#model", "s => s.options[s.selectedIndex].text")
    page.select_option("#model", "cifar10-allcnn/1")
    # Choosing version 1 loads it from the store first: the timeouts only end a hung test.
    page.wait_for_function(
        "() => document.querySelector('#model-info')?.textContent.includes('classes')", timeout=180_000
    )
    assert "32x32, RGB input; 10 classes; 9 layers" in page.text_content("#model-info")
    page.set_input_files("#file", str(path))
    confidence = f"({100 * oldest['confidence']:.1f}%)"
    page.wait_for_function(
        "c => document.querySelector('#prediction')?.textContent.includes(c)", arg=confidence, timeout=180_000
    )
    wait_for_image(page, "#activations")
    api_calls = [u for u in urls if "/predict" in u or "/activations/" in u or "/explain/" in u]
    assert api_calls and all("model=cifar10-allcnn" in u and "version=1" in u for u in api_calls)
    page.close()


def test_any_method_with_its_trust_scores(browser, server, validation_sample):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    options = page.eval_on_selector("#explainer", "s => Array.from(s.options).map(o => o.value)")
    assert {"integrated-gradients", "grad-cam", "occlusion", "guided-ig"} <= set(options)
    page.set_input_files("#file", str(validation_sample[2][0]))
    wait_for_image(page, "#ig")
    first = page.get_attribute("#ig", "src")
    page.select_option("#explainer", "grad-cam")
    page.check("#trust")
    page.click("#explain")
    page.wait_for_function("() => document.querySelector('#trust-scores')?.textContent.includes('sanity')")
    page.wait_for_function("s => document.querySelector('#ig')?.src !== s", arg=first)
    wait_for_image(page, "#ig")
    text = page.text_content("#trust-scores")
    assert "deletion area" in text and "insertion area" in text and "lower is better" in text
    assert natural_width(page, "#ig") == 1600  # the map with a fourth panel: the deletion/insertion curves
    assert "grad-cam" in page.text_content("#completeness") and errors == []
    page.close()


def visible_headings(page) -> list[str]:
    return page.eval_on_selector_all(
        "h2, h3, figcaption", "nodes => nodes.filter(n => n.offsetParent !== null).map(n => n.textContent.trim())"
    )


def test_before_any_upload_no_heading_stands_over_an_empty_result(browser, server):
    page = browser.new_page()
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    headings = visible_headings(page)
    assert not any("three layers" in h or "Interior gradients" in h for h in headings), headings
    page.close()


def test_each_method_shows_its_own_parameters_and_grad_cam_takes_a_layer(browser, server, validation_sample):
    page = browser.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    listing = {m["name"]: m for m in httpx.get(f"{server.base_url}/explain").json()["methods"]}

    def shown() -> set[str]:
        return set(page.eval_on_selector_all("#params [data-param]", "els => els.map(e => e.dataset.param)"))

    assert {"steps", "baseline", "method"} <= shown()
    page.select_option("#explainer", "grad-cam")
    own = {p["name"] for p in listing["grad-cam"]["parameters"]} - {
        "target", "score", "sign", "clip_percentile", "evaluate", "evaluate_steps", "samples", "noise", "smooth", "seed"
    }  # fmt: skip
    assert shown() == own == {"layer"}  # integrated gradients' controls are gone
    layers = page.eval_on_selector_all("#param-layer option", "options => options.map(o => o.value)")
    assert layers[0] == "" and "conv6" in layers
    page.select_option("#explainer", "occlusion")
    assert shown() == {"size", "stride", "value"}
    assert page.input_value("#param-size") == str(
        next(p for p in listing["occlusion"]["parameters"] if p["name"] == "size")["schema"]["default"]
    )
    page.select_option("#explainer", "grad-cam")
    page.select_option("#param-layer", "conv6")
    page.set_input_files("#file", str(validation_sample[2][0]))
    page.wait_for_function("() => document.querySelector('#completeness')?.textContent.includes('layer conv6')")
    wait_for_image(page, "#ig")
    assert any("/explain/grad-cam?" in u and "layer=conv6" in u for u in urls)
    page.close()


def test_feature_visualization_draws_the_chosen_channel(browser, server):
    page = browser.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(server.base_url + "/")
    page.wait_for_function("() => document.querySelector('#feature-layer')?.options.length > 0")
    page.select_option("#feature-layer", "conv3")
    page.fill("#feature-channel", "5")
    page.fill("#feature-steps", "16")
    page.click("#visualize")
    wait_for_image(page, "#features")
    assert any("/visualize/conv3/5?" in u and "steps=16" in u for u in urls)
    assert natural_width(page, "#features") >= 800
    page.close()


def test_an_unreadable_upload_clears_the_last_image_s_results(browser, server, validation_sample, tmp_path):
    page = browser.new_page()
    page.goto(server.base_url + "/")
    wait_for_image(page, "#histograms")
    page.set_input_files("#file", str(validation_sample[2][0]))
    page.wait_for_selector("#label", timeout=60_000)
    wait_for_image(page, "#ig")
    broken = tmp_path / "notes.png"
    broken.write_bytes(b"this is not an image")
    page.set_input_files("#file", str(broken))
    page.wait_for_selector("#prediction-error", state="visible")
    assert "invalid_image" in page.text_content("#prediction-error")
    for selector in ("#activations", "#animation", "#ig", "#interior", "#preview"):
        assert page.get_attribute(selector, "src") is None, selector
    assert page.query_selector("#label") is None and "Choose another" in page.text_content("#prediction")
    page.close()


def test_the_jobs_panel_runs_images_as_a_job_and_follows_its_events(browser, server, validation_sample):
    def events_calls() -> float:
        lines = httpx.get(f"{server.base_url}/metrics").text.splitlines()
        route = 'route="/jobs/{job_id}/events"'
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in lines if route in line and line.startswith("mindscope_req")
        )

    before = events_calls()
    page = browser.new_page()
    page.goto(server.base_url + "/")
    page.wait_for_function("() => [...document.querySelectorAll('#job-kind option')].some(o => o.value === 'grad-cam')")
    page.click("#job-submit")  # nothing chosen: the panel says what to do
    page.wait_for_function("() => document.querySelector('#jobs-error')?.textContent.includes('Choose images')")
    page.set_input_files("#job-files", [str(path) for path in validation_sample[2][:3]])
    page.select_option("#job-kind", "grad-cam")
    page.click("#job-submit")
    page.wait_for_function(
        "() => { const row = document.querySelector('#jobs tr'); "
        "return row && row.querySelector('.state').textContent === 'succeeded'; }",
        timeout=120_000,
    )
    row = page.query_selector("#jobs tr")
    job_id = row.get_attribute("data-job")
    assert row.query_selector(".count").text_content() == "3/3"
    assert row.eval_on_selector("progress", "p => [p.value, p.max]") == [3, 3]
    assert row.query_selector(".cancel").is_disabled() and not page.is_visible("#jobs-error")
    job = httpx.get(f"{server.base_url}/jobs/{job_id}").json()
    assert (job["state"], job["method"], job["items"]["done"]) == ("succeeded", "grad-cam", 3)
    csv = httpx.get(server.base_url + row.query_selector("a.csv").get_attribute("href")).text
    assert len(csv.strip().splitlines()) == 4
    assert events_calls() > before  # the progress came from the job's Server-Sent Events
    page.close()
