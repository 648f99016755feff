#!/usr/bin/env bash
# Set up .venv and run the offline quickstart search (configs/quickstart.yaml) end to end:
# fine-tune a real teacher on SST-2 from ../shared/data, cache its outputs, search students.
# Extra arguments go to run_search.py (e.g. --set evolution.generations=3, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python run_search.py --config configs/quickstart.yaml "$@"
