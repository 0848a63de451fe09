"""Writing a benchmark's table into its own section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, text: str) -> None:
    """Put `text` in place of the section with its title (its first line), or at the end."""
    document = path.read_text() if path.exists() else "# Benchmarks\n"
    title = text.splitlines()[0]
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(document):
        document = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", document)
    else:
        document = document.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(document)
