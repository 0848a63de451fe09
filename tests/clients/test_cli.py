"""`mindscope-client` in its own process against a real server: answers and one-line errors."""

import subprocess
import sys
from pathlib import Path

import httpx
from mindscope.engine.quadrature import RULES
from mindscope_client._cli import QUADRATURE_RULES

CLI = str(Path(sys.executable).with_name("mindscope-client"))


def run_cli(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--url", server.base_url, *args], capture_output=True, text=True, timeout=120)


def test_predict_prints_the_services_label_and_confidence(server, validation_sample):
    for path in validation_sample[2][:3]:
        native = httpx.post(f"{server.base_url}/predict", files={"file": ("x.jpg", path.read_bytes())}).json()
        done = run_cli(server, "predict", str(path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{path}: {native['label']} ({native['confidence']:.1%})"]


def test_attribute_takes_the_method_as_a_word_or_a_flag(server, validation_sample):
    image = str(validation_sample[2][0])
    positional = run_cli(server, "attribute", image, "grad-cam", "--set", "layer=conv6")
    flagged = run_cli(server, "attribute", image, "--with", "grad-cam", "--set", "layer=conv6")
    assert positional.returncode == 0 and flagged.returncode == 0, positional.stderr + flagged.stderr
    assert positional.stdout.startswith("grad-cam: ") and "layer=conv6" in positional.stdout
    assert positional.stdout.splitlines()[1:] == flagged.stdout.splitlines()[1:]
    both = run_cli(server, "attribute", image, "grad-cam", "--with", "occlusion")
    assert both.returncode == 1 and both.stderr.strip().splitlines() == [
        "error: two methods given: grad-cam and --with occlusion; give one"
    ]


def test_a_missing_file_is_one_line(server, tmp_path):
    done = run_cli(server, "predict", str(tmp_path / "nope.jpg"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: No such file or directory: {tmp_path / 'nope.jpg'}"]


def test_an_unknown_layer_lists_the_valid_ones(server, validation_sample):
    done = run_cli(server, "activations", str(validation_sample[2][0]), "--layer", "conv0")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "unknown_layer" in done.stderr and "valid layers: conv1, conv2" in done.stderr


def test_every_option_is_explained_and_methods_are_the_servers():
    assert set(QUADRATURE_RULES) == set(RULES)
    for command in ("predict", "explain", "activations", "histogram"):
        help_text = subprocess.run([CLI, command, "--help"], capture_output=True, text=True, timeout=60).stdout
        options = [
            line.split()[0] for line in help_text.splitlines() if line.startswith("  -") and "--help" not in line
        ]
        described = [line for line in help_text.splitlines() if line.startswith("  -") or line.startswith("   ")]
        assert options and len(described) > len(options), help_text
    explain_help = subprocess.run([CLI, "explain", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "{gauss_legendre,riemann_trapezoid" in explain_help


def test_explain_says_which_score_it_attributed(server, validation_sample):
    done = run_cli(server, "explain", str(validation_sample[2][0]), "--steps", "16", "--score", "logit")
    assert done.returncode == 0, done.stderr
    assert ", its logit; method gauss_legendre, 16 steps" in done.stdout.splitlines()[0]


def test_attribute_runs_any_method_and_prints_its_scores(server, validation_sample, tmp_path):
    done = run_cli(
        server,
        "attribute",
        str(validation_sample[2][0]),
        "--with",
        "occlusion",
        "--set",
        "size=8",
        "--set",
        "stride=8",
        "--evaluate",
        "deletion,insertion",
        "--png",
        str(tmp_path / "occlusion.png"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("occlusion: ") and "0 gradient and 18 forward rows" in lines[0]
    assert "size=8" in lines[1] and lines[4].startswith("deletion") and lines[5].startswith("insertion")
    assert (tmp_path / "occlusion.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_cli(server, "attribute", str(validation_sample[2][0]), "--set", "layer")
    assert bad.returncode == 1 and "NAME=VALUE" in bad.stderr


def test_methods_lists_the_servers_registry_with_each_methods_own_parameters(server):
    listed = httpx.get(f"{server.base_url}/explain").json()["methods"]
    done = run_cli(server, "methods")
    assert done.returncode == 0, done.stderr
    names = [line.split(":")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert names == [m["name"] for m in listed] and "shap" in names
    assert "  --set max_evals=...  (default 500)" in done.stdout and "  --set layer=..." in done.stdout
