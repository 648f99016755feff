#!/usr/bin/env bash
# Set up .venv and run the offline quickstart end to end (configs/quickstart.yaml): fine-tune a
# real teacher on SST-2 from ../shared/data, cache its outputs, attack it once (DeepWordBug) for the
# adversarial proxy set, search students on local Ray with robustness in the fitness, then export the
# best student as a loadable model (with ONNX Runtime fp32 and int8 graphs, checked on the dev set)
# and write the HTML report, both under runs/quickstart/.
# Extra arguments go to run_search.py (e.g. --resume to continue or re-show a finished run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python run_search.py --config configs/quickstart.yaml "$@"
.venv/bin/rosearch export runs/quickstart --top 1 --out runs/quickstart/export --onnx --int8  # + ONNX and int8 graphs, checked
.venv/bin/rosearch report runs/quickstart
