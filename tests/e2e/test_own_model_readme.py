"""README's "Serve your own model" block runs as written: build a model, import it, serve it, ask it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ..servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- serve-your-own-model:"


def test_the_readme_block_imports_serves_and_answers(tmp_path):
    text = README.read_text()
    block = re.search(re.escape(MARKER) + r".*?-->\n```bash\n(.*?)```", text, flags=re.S)
    assert block, "README.md lost its serve-your-own-model block"
    port = str(free_port())
    code = block.group(1).replace("8000", port)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MINDSCOPE_GRPC_PORT": "0"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote my_store/shapes/1" in done.stdout
    prediction = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert prediction["classes"] == ["circle", "square", "triangle"]
    assert prediction["input"]["width"] == 40 and prediction["model"] == {"name": "shapes", "version": 1}
    assert (tmp_path / "features.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
