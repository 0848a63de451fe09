"""Many models, bounded memory: a store of five models served by a server that keeps two (or two
and a half models' weights) in memory. Every model answers as Keras does, before and after it was
unloaded; the resident count and bytes stay within the limits; the default stays ready; a request
for a model being loaded waits for that one load, within its deadline."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import keras
import numpy as np
import pytest
from mindscope.config import Settings
from mindscope.engine.importer import import_model

from ..api.helpers import array_of, assert_error
from ..servers import InProcessServer
from .test_any_model import PNG, picture

SHAPE = (10, 10, 3)
NAMES = [f"m{i}" for i in range(5)]


def tiny(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, activation="elu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="scores")(x))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("residency")
    models = {}
    for seed, name in enumerate(NAMES):
        model = tiny(seed)
        model.save(folder / f"{name}.keras")
        import_model(folder / f"{name}.keras", name, folder / "store")
        models[name] = model
    return folder, models


def weight_bytes(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) * 4 for w in model.weights)


def predicts_as_keras(http: httpx.Client, models, name: str, seed: int) -> None:
    body, pixels = picture(SHAPE, seed)
    answer = http.post(f"/predict?model={name}", content=body, headers=PNG)
    assert answer.status_code == 200, (name, answer.text)
    expected = np.asarray(models[name](pixels[None], training=False))[0]
    assert np.allclose(array_of(answer.json()["probabilities"]), expected, atol=1e-5), name


def test_more_models_than_fit_all_answer_within_the_count(store):
    folder, models = store
    settings = Settings(
        model_store_dir=folder / "store",
        default_model="m0",
        preload="m1",
        max_loaded_models=2,
        jobs_dir=folder / "jobs-count",
        request_timeout_s=10,
    )
    with InProcessServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        registry = server.app.state.registry
        # The default and the preloaded model are in memory before any request names them.
        wait_for_loads(server, 2)
        assert {ref.name for ref in registry.loaded()} == {"m0", "m1"}
        for round_ in range(2):  # the second round asks each model again after it was unloaded
            for name in NAMES:
                predicts_as_keras(http, models, name, seed=round_ * 10 + len(name))
                assert server.metric("mindscope_models_resident ") <= 2
                assert http.get("/health/ready").status_code == 200
                assert "m0" in {ref.name for ref in registry.loaded()}  # the default is never unloaded
        assert server.metric("mindscope_model_unloads") == 7
        assert server.metric("mindscope_model_loads") == 2 + server.metric("mindscope_model_unloads")
        assert server.metric("mindscope_model_load_seconds") > 0

        # Requests for a model being loaded wait for that one load, then all answer.
        loads = server.metric("mindscope_model_loads")
        unloaded = next(name for name in NAMES if name not in {ref.name for ref in registry.loaded()})
        release = threading.Event()
        registry._loader.submit(release.wait)  # the loader is busy: the next load queues behind this
        with ThreadPoolExecutor(3) as pool:
            waiting = [pool.submit(predicts_as_keras, http, models, unloaded, seed) for seed in range(3)]
            time.sleep(0.5)
            assert not any(future.done() for future in waiting)
            release.set()
            for future in waiting:
                future.result()
        assert server.metric("mindscope_model_loads") == loads + 1

        # A load that outlasts the request's deadline: 504, the load goes on, the next request is served.
        unloaded = next(name for name in NAMES if name not in {ref.name for ref in registry.loaded()})
        release = threading.Event()
        registry._loader.submit(release.wait)
        body, _ = picture(SHAPE, 1)
        late = http.post(f"/predict?model={unloaded}", content=body, headers=PNG)
        assert_error(late, 504, "deadline_exceeded")
        release.set()
        predicts_as_keras(http, models, unloaded, seed=5)


def test_a_memory_budget_keeps_the_weights_within_it(store):
    folder, models = store
    size = weight_bytes(models["m0"])
    budget_mb = 2.5 * size / 1e6  # two models' weights fit, three do not
    settings = Settings(
        model_store_dir=folder / "store", default_model="m0", model_memory_mb=budget_mb, jobs_dir=folder / "jobs-mem"
    )
    with InProcessServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        for round_ in range(2):
            for name in NAMES:
                predicts_as_keras(http, models, name, seed=round_ + 3)
                resident = server.metric("mindscope_models_resident_bytes")
                assert size <= resident <= budget_mb * 1e6
                assert server.metric("mindscope_models_resident ") == (1 if round_ == 0 and name == "m0" else 2)
        assert server.metric("mindscope_model_unloads") == 7  # m1 to m4 loaded twice, one unload each past the first


def wait_for_loads(server: InProcessServer, count: int) -> None:
    deadline = time.monotonic() + 120
    while server.metric("mindscope_model_loads") < count:
        assert time.monotonic() < deadline, "the preloaded models never loaded"
        time.sleep(0.1)


def test_tritons_model_control_loads_lists_and_unloads(store):
    """Triton's explicit model control through its own client: the repository index says what is in
    memory, load and unload move a model in and out, and the default stays."""
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    folder, models = store
    settings = Settings(model_store_dir=folder / "store", default_model="m0", jobs_dir=folder / "jobs-control")
    with InProcessServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        client = triton_http.InferenceServerClient(server.base_url.removeprefix("http://"))
        try:
            index = {entry["name"]: entry for entry in client.get_model_repository_index()}
            assert set(index) == set(NAMES)
            assert index["m0"]["state"] == "READY" and index["m3"]["state"] == "UNAVAILABLE"
            client.load_model("m3")
            assert [e["name"] for e in client.get_model_repository_index()] == NAMES
            ready = http.post("/v2/repository/index", json={"ready": True}).json()
            assert {entry["name"] for entry in ready} == {"m0", "m3"}
            assert http.get("/models").json()["models"][3]["loaded_versions"] == [1]
            client.unload_model("m3")
            assert {e["name"] for e in http.post("/v2/repository/index", json={"ready": True}).json()} == {"m0"}
            assert server.metric("mindscope_models_resident ") == 1
            predicts_as_keras(http, models, "m3", seed=9)  # it loads again on its next request
            with pytest.raises(InferenceServerException, match="serving default"):
                client.unload_model("m0")
            with pytest.raises(InferenceServerException, match="no model named"):
                client.load_model("nope")
        finally:
            client.close()
        assert http.get("/health/ready").status_code == 200


def test_a_model_a_job_runs_on_stays_loaded_until_the_job_ends(store):
    from ..jobs.helpers import finished
    from ..servers import ModelGate

    folder, models = store
    settings = Settings(
        model_store_dir=folder / "store", default_model="m0", max_loaded_models=2, jobs_dir=folder / "jobs-held"
    )
    with InProcessServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        registry = server.app.state.registry
        _, pixels = picture(SHAPE, 2)
        with ModelGate(registry.get("m1").forward_batcher) as gate:
            job = http.post(
                "/jobs", json={"kind": "predict", "model": "m1", "instances": [pixels.tolist()], "value_range": "0-1"}
            )
            assert job.status_code == 202, job.text
            gate.wait_entered(1)  # the job is computing on m1
            for name in ("m2", "m3"):
                predicts_as_keras(http, models, name, seed=4)
                assert "m1" in {ref.name for ref in registry.loaded()}  # past the limit, but a job holds it
            refused = http.post("/v2/repository/models/m1/unload")
            assert refused.status_code == 409 and "a job is running on m1" in refused.json()["error"]
            gate.open()
            assert finished(http, job.json()["id"])["state"] == "succeeded"
        predicts_as_keras(http, models, "m4", seed=5)  # the job is over: m1 goes now, least recently used
        assert {ref.name for ref in registry.loaded()} == {"m0", "m4"}
        predicts_as_keras(http, models, "m1", seed=6)
