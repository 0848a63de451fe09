"""On one local Ray instance (started once: Ray's start-up is the slow part): the FastAPI app on Ray
Serve, two replicas behind Ray's HTTP proxy; then a job computed on Ray Data's actors, whose results
equal the embedded runner's."""

import shutil
import time
from pathlib import Path

import httpx
from mindscope.config import Settings
from mindscope.deploy.ray_serve import RaySettings, build_app

from ..api.helpers import array_of
from ..servers import free_port


def test_two_replicas_answer_predict_and_integrated_gradients_and_a_job_runs_on_ray_data(
    committed_store, sample_jpeg, data_dir, tmp_path
):
    import ray  # a test dependency (make test installs .[ray]): missing, the test fails rather than skip
    from ray import serve

    # Ray's default temp folder keeps its socket paths under the AF_UNIX length limit.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(Settings(model_store_dir=committed_store.root), RaySettings(num_replicas=2, num_cpus=0.5))
        serve.run(app, name="mindscope", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while httpx.get(f"{base}/health/ready", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "no replica became ready"
            time.sleep(0.5)

        status = serve.status().applications["mindscope"].deployments["mindscope"]
        assert status.replica_states.get("RUNNING") == 2

        # Replicas load the model before Ray routes to them: no request meets one still loading.
        for _ in range(8):
            prediction = httpx.post(f"{base}/predict", content=sample_jpeg, headers={"Content-Type": "image/jpeg"})
            assert prediction.status_code == 200 and prediction.json()["model"]["name"] == "cifar10-allcnn"
        explained = httpx.post(
            f"{base}/explain/integrated-gradients?steps=32",
            files={"file": ("x.jpg", sample_jpeg, "image/jpeg")},
            timeout=120,
        )
        body = explained.json()
        assert array_of(body["attributions"]).shape == (32, 32, 3)
        assert body["completeness"]["relative_delta"] < 0.01
        serve.shutdown()
        a_job_on_ray_equals_the_embedded_run(committed_store, data_dir, tmp_path)
    finally:
        serve.shutdown()
        ray.shutdown()


def a_job_on_ray_equals_the_embedded_run(committed_store, data_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    from mindscope.engine.explain.method import Caps
    from mindscope.engine.registry import ModelRegistry
    from mindscope.jobs.service import JobService
    from mindscope.jobs.settings import JobSettings
    from mindscope.jobs.spec import JobRequest

    from ..servers import wait_until

    root = tmp_path / "root"
    for name in ("cat", "ship"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / name).iterdir())[:2]:
            shutil.copy(path, root / name / path.name)
    (root / "cat" / "notes.txt").write_text("not an image")
    request = JobRequest(
        kind="explain", method="integrated-gradients", parameters={"steps": 16, "evaluate": ["deletion"]}, folder="."
    )
    registry = ModelRegistry(committed_store)
    runs = {}
    for where, address in (("embedded", None), ("ray", "auto")):
        settings = JobSettings(
            tmp_path / where, root, 10**9, 3600.0, 100, 10**8, 4096 * 4096, 2, Caps(), address, 1, 0.5
        )
        jobs = JobService(settings, registry)
        jobs.start()
        try:
            job = jobs.submit(request).job
            wait_until(lambda jobs=jobs, job=job: jobs.get(job.id).state != "queued", timeout=60)
            wait_until(lambda jobs=jobs, job=job: jobs.get(job.id).state != "running", timeout=300)
            assert jobs.get(job.id).state == "succeeded", jobs.get(job.id).error
            rows = jobs.store.items(job.id)
            maps = {p.name: np.load(p) for p in sorted((tmp_path / where / job.id / "maps").iterdir())}
            runs[where] = (rows, maps)
        finally:
            jobs.stop()
    (embedded, embedded_maps), (on_ray, ray_maps) = runs["embedded"], runs["ray"]
    assert [(r.n, r.source, r.label, r.state, r.error) for r in on_ray] == [
        (r.n, r.source, r.label, r.state, r.error) for r in embedded
    ]
    assert [r.state for r in on_ray].count("failed") == 1  # the text file, on both
    for ours, theirs in zip(embedded, on_ray, strict=True):
        if ours.result is not None:
            assert theirs.result["prediction"] == ours.result["prediction"]
            assert abs(theirs.result["deletion_area"] - ours.result["deletion_area"]) < 1e-5
    assert sorted(ray_maps) == sorted(embedded_maps) and len(ray_maps) == 4
    for name, values in embedded_maps.items():
        np.testing.assert_allclose(ray_maps[name], values, rtol=1e-5, atol=1e-7)
