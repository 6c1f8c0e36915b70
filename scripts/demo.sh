#!/usr/bin/env bash
# hierloss's main job, set-up included: creates .venv, installs torch and hierloss (editable, with torchmetrics,
# matplotlib and tqdm), then runs `hierloss demo` (BCE, HBCE, HBCE hard and MCLoss on synthetic hierarchical data,
# one comparison table). Each step prints what it does and the seconds elapsed; pip shows what it downloads.
#
# Arguments go to the demo:  bash scripts/demo.sh --data ../shared/data/hmc/eisen_FUN --plot demo.png
# HIERLOSS_TORCH_SPEC (default torch==2.13.0) is the torch to install; HIERLOSS_TORCH_INDEX, if set, is the index
# to take it from. On Linux, PyPI's torch is the CUDA build (several GB): for the CPU build use
#   HIERLOSS_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${HIERLOSS_TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${HIERLOSS_TORCH_INDEX:-}
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar on)
start=$SECONDS
step() { printf '\n== [%d s] %s\n' "$((SECONDS - start))" "$*"; }

if [ -x .venv/bin/python ]; then
  step "reusing the virtual environment .venv"
else
  step "creating the virtual environment .venv ($PYTHON -m venv .venv)"
  "$PYTHON" -m venv .venv
fi

step "installing $TORCH_SPEC${TORCH_INDEX:+ from $TORCH_INDEX} into .venv (pip skips what is already installed)"
"${PIP[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"

step "installing hierloss (editable) with numpy, pandas, networkx, torchmetrics, matplotlib and tqdm into .venv"
"${PIP[@]}" -e ".[metrics,plot,progress]"

step "installs done; running: hierloss demo $*"
exec .venv/bin/hierloss demo "$@"
