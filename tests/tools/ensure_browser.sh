#!/usr/bin/env bash
# Make sure the explorer's browser tests have a Chromium: the system's, else Debian's package (when
# this user may install packages), else Playwright's own download. Prints the browser's path on the
# last line; fails with one clear line only when all three fail.
set -u
if [ -n "${MINDSCOPE_CHROMIUM:-}" ] && [ -x "$MINDSCOPE_CHROMIUM" ]; then echo "$MINDSCOPE_CHROMIUM"; exit 0; fi
found() { command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null; }
path=$(found) && { echo "$path"; exit 0; }
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "chromium: installing Debian's chromium package (apt-get)..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1
  path=$(found) && { echo "$path"; exit 0; }
fi
python=${PYTHON:-.venv/bin/python}
if "$python" -m playwright --version >/dev/null 2>&1; then
  echo "chromium: downloading Playwright's Chromium..." >&2
  if "$python" -m playwright install chromium >/dev/null 2>&1; then
    path=$("$python" -c 'from playwright.sync_api import sync_playwright
with sync_playwright() as p: print(p.chromium.executable_path)' 2>/dev/null) && [ -x "$path" ] && { echo "$path"; exit 0; }
  fi
fi
echo "no Chromium for the browser tests: install one (apt-get install chromium), or set MINDSCOPE_CHROMIUM to its path" >&2
exit 1
