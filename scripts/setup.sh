#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv and install clipwise into it.
# torch and torchvision are pinned through constraints.txt; re-running reuses what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.clipwise-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import clipwise, torch, timm, lightning" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  # the extra index pages this machine's pip is configured with do not all exist; pip's warnings about that are noise
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import clipwise, torch, timm, lightning" 
  echo "$want" > "$stamp"
fi
