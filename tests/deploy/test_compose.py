"""No Docker engine runs here: check the compose file and Dockerfile agree with the service."""

import re
from pathlib import Path

import yaml
from mindscope.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_service_mounts_the_store_read_only_and_checks_readiness():
    cpu = compose()["services"]["mindscope"]
    assert "./model_store:/models:ro" in cpu["volumes"]
    assert cpu["environment"]["MINDSCOPE_MODEL_STORE_DIR"] == "/models"
    assert cpu["expose"] == ["8000", "8001"] and "ports" not in cpu  # reached through nginx only
    assert cpu["deploy"]["replicas"] == "${MINDSCOPE_REPLICAS:-2}"
    assert "/health/ready" in " ".join(cpu["healthcheck"]["test"])
    assert cpu["stop_signal"] == "SIGTERM"


def test_nginx_balances_the_replicas_with_limits_that_match_the_service():
    services = compose()["services"]
    nginx = services["nginx"]
    assert nginx["ports"] == ["8000:80", "8001:8001"]
    assert nginx["depends_on"]["mindscope"]["condition"] == "service_healthy"
    config = (REPO / "deploy" / "nginx.conf").read_text()
    assert "server mindscope:8000" in config and "proxy_pass http://mindscope;" in config
    assert "server mindscope:8001" in config and "grpc_pass grpc://mindscope_grpc;" in config
    body_mib = int(re.search(r"client_max_body_size (\d+)m;", config).group(1))
    service_bytes = int(services["mindscope"]["environment"]["MINDSCOPE_MAX_BODY_BYTES"])
    assert body_mib * 1024 * 1024 == service_bytes
    assert int(re.search(r"proxy_read_timeout (\d+)s;", config).group(1)) >= 60
    for mount in nginx["volumes"]:
        assert (REPO / mount.split(":")[0]).exists()


def test_prometheus_scrapes_every_replica():
    prometheus = compose()["services"]["prometheus"]
    (mount,) = prometheus["volumes"]
    config = yaml.safe_load((REPO / mount.split(":")[0]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0] == {"names": ["mindscope"], "type": "A", "port": 8000}


def test_gpu_variant_reserves_an_nvidia_device_and_installs_gpu_tensorflow():
    gpu = compose()["services"]["mindscope-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["TF_EXTRA"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    extras = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \["tensorflow\[and-cuda\]', extras, flags=re.M)


def test_dockerfile_serves_on_the_exposed_port_with_the_real_command():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile
    cmd = re.search(r"^CMD (.*)$", dockerfile, flags=re.M).group(1)
    args = yaml.safe_load(cmd)
    assert args[:2] == ["mindscope", "serve"]
    parsed = build_parser().parse_args(args[1:])
    assert (parsed.host, parsed.port) == ("0.0.0.0", 8000)
    for path in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (REPO / path).exists(), path


def test_the_image_installs_the_serving_set_only():
    """The image is for serving: the package and its runtime dependencies, GPU TensorFlow on request,
    never the test tools (`dev`) or Ray."""
    dockerfile = (REPO / "Dockerfile").read_text()
    (install,) = re.findall(r"^RUN pip install (.*)$", dockerfile, flags=re.M)
    assert install == '--no-cache-dir ".${TF_EXTRA:+[$TF_EXTRA]}"'
    assert re.search(r'^ARG TF_EXTRA=""$', dockerfile, flags=re.M)
    makefile = (REPO / "Makefile").read_text()
    serve_install = re.search(r"^\$\(BIN\)/mindscope: .*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    assert "pip install --quiet -e .\n" in serve_install and "dev" not in serve_install
