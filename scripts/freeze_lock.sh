#!/usr/bin/env bash
# Rewrite requirements/lock.txt from the current .venv (after deliberately upgrading packages in it).
set -euo pipefail
cd "$(dirname "$0")/.."
header=$(grep '^#' requirements/lock.txt)
{ echo "$header"; .venv/bin/python -m pip freeze --all --exclude-editable | grep -v "^pip==" | grep -v '^rosearch' | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; } > requirements/lock.tmp
mv requirements/lock.tmp requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"
