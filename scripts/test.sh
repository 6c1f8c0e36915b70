#!/usr/bin/env bash
# The whole hierloss test suite, set-up included, on a machine that has only Python >= 3.10 and pip.
#
# 1. .venv           : torch (CPU build pinned below) + hierloss[dev,docs] in editable mode; runs tests/.
# 2. .venv-examples  : torch + torchvision (needed by examples/chexpert only); runs the tests marked `examples`.
#
# Re-running reuses both environments. HIERLOSS_SKIP_EXAMPLES=1 skips step 2 (the large torchvision install).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${HIERLOSS_TORCH_SPEC:-torch==2.13.0}
EXAMPLES_SPEC=${HIERLOSS_EXAMPLES_SPEC:-torch==2.14.1 torchvision==0.29.1}
PIP_FLAGS=(-q --disable-pip-version-check)

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "core environment .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install "${PIP_FLAGS[@]}" "$TORCH_SPEC"
.venv/bin/python -m pip install "${PIP_FLAGS[@]}" -e ".[dev,docs]"

step "core test suite"
.venv/bin/python -m pytest -n 2 -m "not examples" -p no:cacheprovider

if [ "${HIERLOSS_SKIP_EXAMPLES:-0}" = 1 ] || [ ! -d tests/examples ]; then
  echo "examples tests skipped (HIERLOSS_SKIP_EXAMPLES=1 or no tests/examples)"
  exit 0
fi

step "examples environment .venv-examples"
[ -x .venv-examples/bin/python ] || "$PYTHON" -m venv .venv-examples
# shellcheck disable=SC2086
.venv-examples/bin/python -m pip install "${PIP_FLAGS[@]}" $EXAMPLES_SPEC
.venv-examples/bin/python -m pip install "${PIP_FLAGS[@]}" -e ".[examples,dev]"

step "examples test suite"
.venv-examples/bin/python -m pytest -m examples -p no:cacheprovider
