"""Every explanation route of this checkout against an older commit's, served side by side.

    python bench/routes_ab.py --old REV [--rounds 9] [--out docs/benchmarks.md]

The older commit is checked out into a temporary git worktree and served from it (the same venv,
its `service/` first on PYTHONPATH); both servers load the same model store. Each round sends one
request per method to each server, who goes first alternating, so the machine's drift falls on
both alike; the table gives each side's median latency and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from reliability import IMAGE, REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Explanation routes before and after a change"
ROUTES = (
    ("vanilla-gradients", ""),
    ("gradient-x-input", "samples=8"),
    ("grad-cam", ""),
    ("occlusion", "size=4&stride=1"),
    ("integrated-gradients", "steps=64"),
    ("blur-ig", "steps=100"),
    ("guided-ig", "steps=64"),
    ("xrai", "steps=16"),
    ("vanilla-gradients", "evaluate=deletion,insertion"),
)


def serve(service: Path, store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`mindscope serve` from the `service/` folder given (first on PYTHONPATH), on a free port."""
    command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
    return start_server(command, {"PYTHONPATH": str(service), "MINDSCOPE_MODEL_STORE_DIR": str(store)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare with (e.g. a hash, HEAD~3)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    old = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=REPO, capture_output=True, text=True)
    new = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    body = IMAGE.read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.old], cwd=REPO, check=True)
        servers = []
        try:
            servers = [
                serve(tree / "service", args.store),
                serve(REPO / "service", args.store),
            ]
            times: dict[tuple[str, str], tuple[list[float], list[float]]] = {r: ([], []) for r in ROUTES}
            with httpx.Client(timeout=120) as http:
                for round_ in range(args.rounds + 1):  # the first round warms both up
                    for route in ROUTES:
                        order = (0, 1) if round_ % 2 == 0 else (1, 0)
                        for side in order:
                            url = f"{servers[side][1]}/explain/{route[0]}?{route[1]}"
                            started = time.perf_counter()
                            answer = http.post(url, content=body, headers={"Content-Type": "image/jpeg"})
                            took = time.perf_counter() - started
                            answer.raise_for_status()
                            if round_:
                                times[route][side].append(took)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=60)
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    lines = []
    for (method, query), (before, after) in times.items():
        old_ms, new_ms = 1000 * statistics.median(before), 1000 * statistics.median(after)
        line = f"| {method} | `{query or '-'}` | {old_ms:.1f} | {new_ms:.1f} | {old_ms / new_ms:.2f}x |"
        print(line, flush=True)
        lines.append(line)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/routes_ab.py --old {args.old}` ({started}): commit {old.stdout.strip()} and "
            f"{new.stdout.strip()} served side by side",
            f"from the same venv and model store, one JPEG per request, {args.rounds} rounds after a warm-up, who",
            "goes first alternating; medians over HTTP (keep-alive). Above 1.00x the newer commit is faster.",
            "",
            "| method | query | older ms | newer ms | older / newer |",
            "|---|---|---|---|---|",
            *lines,
        ]
    )
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
