#!/usr/bin/env bash
# hierloss's main job, set-up included: creates .venv, installs hierloss (torch CPU build pinned below) and runs
# `hierloss demo` (BCE, HBCE, HBCE hard and MCLoss on synthetic hierarchical data, one comparison table).
# Arguments go to the demo: bash scripts/demo.sh --data ../shared/data/hmc/eisen_FUN --plot demo.png
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${HIERLOSS_TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[metrics,plot,progress]"
exec .venv/bin/hierloss demo "$@"
