"""A real headless Chromium for the tests that render pages (the explorer, an audit's report)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# `make test` finds or installs one (tests/tools/ensure_browser.sh) and names it in MINDSCOPE_CHROMIUM.
CHROMIUM = os.environ.get("MINDSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "artifacts"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def launched_browser() -> Iterator[Any]:
    from playwright import sync_api  # a test dependency: missing, it fails here rather than skip

    if not Path(CHROMIUM).exists():
        pytest.fail("no Chromium for the browser tests: run `make test` (it installs one) or set MINDSCOPE_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()
