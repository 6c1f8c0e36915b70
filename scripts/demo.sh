#!/usr/bin/env bash
# hierloss's main job, set-up included: creates .venv, installs hierloss (torch CPU build pinned below) and runs it.
# Until `hierloss demo` lands (see the issue tracker), the main job is `hierloss penalties`: the paper's data-driven
# edge penalties on the CheXpert test labels in ../shared/data (or on labels you pass: bash scripts/demo.sh FILE.csv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${HIERLOSS_TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[metrics,plot,progress]"
if .venv/bin/hierloss --help | grep -q ' demo'; then
  exec .venv/bin/hierloss demo "$@"
fi
labels=${1:-../shared/data/chexpert/test_groundtruth.csv}
if [ ! -f "$labels" ]; then
  echo "no label file at $labels: pass a CheXpert-style CSV, e.g. bash scripts/demo.sh path/to/train.csv" >&2
  exit 2
fi
echo "hierloss penalties $labels --hierarchy chexpert --uncertain zeros"
exec .venv/bin/hierloss penalties "$labels" --hierarchy chexpert --uncertain zeros
