"""`make gallery`: every picture the API draws, rendered by a real server into docs/images/.

Starts `mindscope serve` on a free loopback port over the committed store, posts one held-out
CIFAR-10 image to each picture endpoint, and writes what comes back, so README can show what each
endpoint answers before anyone runs anything.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from mindscope.training.data import list_image_folder, split_validation

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10" / "train"
# (file, method, path): every route that answers a picture.
PICTURES = (
    ("predict.png", "POST", "/predict?format=png"),
    ("activations-conv3.png", "POST", "/activations/conv3?format=png"),
    ("activations-conv9.png", "POST", "/activations/conv9?format=png"),
    ("animation.gif", "POST", "/activations/animation"),
    ("integrated-gradients.png", "POST", "/explain/integrated-gradients?format=png&steps=64"),
    ("interior-gradients.png", "POST", "/explain/interior-gradients?format=png"),
    (
        "integrated-gradients-trust.png",
        "POST",
        "/explain/integrated-gradients?format=png&steps=64&evaluate=deletion,insertion,sanity",
    ),
    ("occlusion.png", "POST", "/explain/occlusion?format=png"),
    ("grad-cam.png", "POST", "/explain/grad-cam?format=png"),
    ("shap.png", "POST", "/explain/shap?format=png"),
    ("weight-histograms.png", "GET", "/weights/histogram?format=png"),
    ("visualize-conv3-5.png", "GET", "/visualize/conv3/5?format=png"),
    ("visualize-conv9.png", "GET", "/visualize/conv9?format=png"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(image: Path, out: Path, store: Path) -> list[Path]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", str(port), "--grpc-port", "0"]
    env = {**os.environ, "MINDSCOPE_MODEL_STORE_DIR": str(store)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = []
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.3)
        body = image.read_bytes()
        out.mkdir(parents=True, exist_ok=True)
        with httpx.Client(base_url=base, timeout=120) as http:
            for name, method, path in PICTURES:
                if method == "POST":
                    response = http.post(path, content=body, headers={"Content-Type": "image/jpeg"})
                else:
                    response = http.get(path)
                response.raise_for_status()
                (out / name).write_bytes(response.content)
                written.append(out / name)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return written


def held_out_image(data: Path, class_name: str = "ship") -> Path:
    """The first image of `class_name` in the shipped models' held-out split (seed 0, 5,000 images)."""
    paths, labels, names = list_image_folder(data)
    _, validation = split_validation(len(paths), 5000, seed=0)
    return next(paths[i] for i in validation if names[labels[i]] == class_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, help="default: the first held-out ship of ../shared's CIFAR-10")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    args = parser.parse_args()
    image = args.image or held_out_image(DATA)
    print(f"image: {image}")
    for path in render(image, args.out, args.store):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
