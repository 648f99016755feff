#!/usr/bin/env bash
# Create .venv (or reuse it) and install rosearch with its pinned dependencies. Idempotent:
# a second run only re-checks. CPU torch by default; for a CUDA machine see README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=requirements/lock.txt
STAMP="$VENV/.rosearch-lock.sha256"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
want=$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -c1-64)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned dependencies from $LOCK (first run takes a few minutes; pip's output: $VENV/pip-install.log)"
  # pip's notices (e.g. about a machine's extra package indexes) go to the log; on failure its tail is shown
  if ! { "$VENV/bin/python" -m pip install --quiet --no-deps -r "$LOCK" &&
         "$VENV/bin/python" -m pip install --quiet --no-deps -e .; } > "$VENV/pip-install.log" 2>&1; then
    tail -n 40 "$VENV/pip-install.log" >&2
    echo "setup: pip install failed (full output: $VENV/pip-install.log)" >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip check
  echo "$want" > "$STAMP"
fi
# WordNet (for PWWS and WordNet augmentation) comes from Debian; rosearch writes the NLTK layout itself
bash scripts/provision_wordnet.sh
echo "setup: $("$VENV/bin/python" -c 'import torch, transformers, rosearch; print(f"rosearch ready (torch {torch.__version__}, transformers {transformers.__version__})")')"
