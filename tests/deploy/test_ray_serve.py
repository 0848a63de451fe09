"""The FastAPI app on a local Ray Serve instance: two replicas behind Ray's HTTP proxy."""

import time

import httpx
from mindscope.config import Settings
from mindscope.deploy.ray_serve import RaySettings, build_app

from ..api.helpers import array_of
from ..servers import free_port


def test_two_replicas_answer_predict_and_integrated_gradients(committed_store, sample_jpeg):
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
    finally:
        serve.shutdown()
        ray.shutdown()
