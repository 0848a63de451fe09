"""The audit job over 10,000 CIFAR-10 training images: its images/s, and README's screenshot of the
report it writes, and TCAV's chart for README.

    python bench/audit_bench.py [--images 10000] [--out docs/benchmarks.md]

The images are copies of the first images of each class in class-named folders (a temporary data
root). The audit runs with its defaults (Grad-CAM and integrated gradients with deletion and insertion
on 10 images a class, 8 channels of the middle animation layer, 6 examples each, 6 mistakes); its
images/s come from the server's own start and end times. The screenshot is of report.html in headless
Chromium (MINDSCOPE_CHROMIUM or /usr/bin/chromium), written to docs/images/audit.png. TCAV: a concept
of 30 cat images, tested for the class cat over 50 other cats against 10 random sets drawn from the
other copies, its chart written to docs/images/tcav.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from reliability import REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## The audit job: images/s over 10,000 images"
DATA = REPO.parent / "shared" / "data" / "cifar10" / "train"
CHROMIUM = os.environ.get("MINDSCOPE_CHROMIUM") or "/usr/bin/chromium"


def copy(root: Path, count: int, start: int = 0) -> None:
    classes = sorted(p.name for p in DATA.iterdir())
    per = -(-count // len(classes))
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((DATA / name).iterdir())[start : start + per]:
            shutil.copy(path, root / name / path.name)


def follow(client: httpx.Client, job_id: str) -> dict:
    while (state := client.get(f"/jobs/{job_id}").json())["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
    assert state["state"] == "succeeded", state
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "root"
        copy(root / "audit", args.images)
        cats = sorted((DATA / "cat").iterdir())
        for folder, span in (("concept", slice(2000, 2030)), ("cats", slice(2100, 2150))):
            (root / folder).mkdir(parents=True)
            for path in cats[span]:
                shutil.copy(path, root / folder / path.name)
        copy(root / "random", 500, start=3000)
        env = {
            "MINDSCOPE_MODEL_STORE_DIR": str(REPO / "model_store"),
            "MINDSCOPE_DATA_ROOT": str(root),
            "MINDSCOPE_JOBS_DIR": str(Path(scratch) / "jobs"),
        }
        command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
        process, base = start_server(command, env)
        try:
            with httpx.Client(base_url=base, timeout=300) as client:
                job = client.post("/jobs", json={"kind": "audit", "folder": "audit"}).json()
                state = follow(client, job["id"])
                took = (
                    datetime.fromisoformat(state["finished"]) - datetime.fromisoformat(state["started"])
                ).total_seconds()
                rate = state["items"]["done"] / took
                page = client.get(f"/jobs/{job['id']}/report", headers={"Accept": "text/html"}).content
                report = client.get(f"/jobs/{job['id']}/report?format=json").json()
                assert client.post("/concepts", json={"name": "cats", "folder": "concept"}).status_code == 201
                parameters = {"concept": "cats", "target": "cat", "random_folder": "random", "size": 30}
                tcav = client.post("/jobs", json={"kind": "tcav", "folder": "cats", "parameters": parameters}).json()
                follow(client, tcav["id"])
                chart = client.get(f"/jobs/{tcav['id']}/report?format=png").content
                (REPO / "docs" / "images" / "tcav.png").write_bytes(chart)
        finally:
            process.terminate()
            process.wait(60)
        html = Path(scratch) / "report.html"
        html.write_bytes(page)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
            shown = browser.new_page(viewport={"width": 1280, "height": 2400})
            shown.goto(html.as_uri())
            shown.screenshot(path=str(REPO / "docs" / "images" / "audit.png"))
            browser.close()
    lines = [
        SECTION,
        "",
        f"`python bench/audit_bench.py --images {args.images}` (one machine: 2 cores, no GPU; the committed CIFAR-10 "
        "model).",
        f"An audit with its defaults over {state['items']['done']} CIFAR-10 training images (the first of each "
        f"class) took {took:.0f} s: **{rate:.0f} images/s**, from the server's own start and end times. That is "
        "every image's prediction and channel peaks; Grad-CAM and integrated gradients with deletion and insertion "
        "on 10 images a class; and at the end the report: the mistakes' maps, 8 channels' receptive-field patches "
        "and feature visualizations. Its accuracy on them: "
        f"{report['accuracy']:.3f} (training images), expected calibration error {report['calibration']['ece']:.4f}.",
        "README shows the report (docs/images/audit.png) and a TCAV chart (docs/images/tcav.png) this script wrote.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
