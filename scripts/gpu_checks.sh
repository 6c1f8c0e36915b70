#!/usr/bin/env bash
# The checks CI cannot run, for a machine with a CUDA GPU, in the order they matter. Each stage writes its log and
# results under OUTDIR; run one stage per call when device time is short.
#
#   bash scripts/gpu_checks.sh tests   OUTDIR   # pytest tests/test_cuda.py (every loss, fused-HBCE path, CUDA graph)
#   bash scripts/gpu_checks.sh bench   OUTDIR   # benchmarks/run.py --device cuda: --compile, --dtype bf16, eager
#   bash scripts/gpu_checks.sh probe   OUTDIR   # one stacked epoch of imclef07a and diatoms: seconds per epoch
#   bash scripts/gpu_checks.sh quality OUTDIR [DATASET ...]   # HMC protocol, every seed and loss stacked
#                                           (default: gasch2_GO diatoms imclef07a, the ones not complete)
#   bash scripts/gpu_checks.sh conditional OUTDIR [DATASET ...]   # conditional training (plain and fine-tuned)
#                                           beside BCE and MCLoss, every seed stacked (default: the five GO
#                                           datasets); then `hmc_quality.py --by-seed ... --out
#                                           OUTDIR/hmc_quality.jsonl` pairs them
#
# Needs python3 (or $PYTHON) with torch (CUDA build), numpy, pandas, networkx; hierloss is used from src/ (no
# install), and the HMC data from ../shared/data/hmc. Every stage names its results file (`--out`): hmc_quality.py
# never writes the committed table unless told to. `quality` copies benchmarks/results/hmc_quality.jsonl to
# OUTDIR/hmc_quality.jsonl, skips the runs in it and appends each dataset's rows when its stacked run ends (a
# dataset cut by a time limit loses its stack, not the datasets before it; SEEDS="0" etc. makes smaller stacks
# where one would not fit: `probe` times an epoch of the whole stack): copy that file back over
# benchmarks/results/hmc_quality.jsonl, commit it, and rebuild the table in docs/benchmarks.md
# (`python benchmarks/hmc_quality.py --table --out benchmarks/results/hmc_quality.jsonl`).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_checks.sh tests|bench|probe|quality|conditional OUTDIR [DATASET ...]}
out=${2:?usage: gpu_checks.sh tests|bench|probe|quality|conditional OUTDIR [DATASET ...]}
shift 2
case "$stage" in tests|bench|probe|quality|conditional) ;; *)
  echo "unknown stage '$stage': expected tests, bench, probe, quality or conditional" >&2; exit 2 ;; esac
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"

case "$stage" in
  tests)
    $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.log" ;;
  bench)  # the GPU goal first (HBCE <= 1.3x compiled BCE), then bf16, then every group eager
    $PY benchmarks/run.py --device cuda --compile --only losses,hbce --out "$out/bench_cuda_compile.json" \
      2>&1 | tee "$out/bench_cuda_compile.md"
    $PY benchmarks/run.py --device cuda --dtype bf16 --only losses,hbce --out "$out/bench_cuda_bf16.json" \
      2>&1 | tee "$out/bench_cuda_bf16.md"
    $PY benchmarks/run.py --device cuda --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.md" ;;
  probe)
    $PY benchmarks/hmc_quality.py --datasets imclef07a diatoms --epochs 1 --stack --device cuda \
      --out "$out/probe.jsonl" 2>&1 | tee "$out/probe.log" ;;
  quality|conditional)
    datasets=("$@")
    if [ "$stage" = quality ]; then
      [ ${#datasets[@]} -gt 0 ] || datasets=(gasch2_GO diatoms imclef07a)
      losses="bce hbce hbce-hard mcloss"
    else
      [ ${#datasets[@]} -gt 0 ] || datasets=(eisen_GO derisi_GO cellcycle_GO spo_GO gasch2_GO)
      losses="bce mcloss conditional conditional-ft"
    fi
    if [ ! -f "$out/hmc_quality.jsonl" ] && [ -f benchmarks/results/hmc_quality.jsonl ]; then
      cp benchmarks/results/hmc_quality.jsonl "$out/hmc_quality.jsonl"
    fi
    # shellcheck disable=SC2086
    $PY benchmarks/hmc_quality.py --datasets "${datasets[@]}" --seeds ${SEEDS:-0 1 2} --losses $losses --stack \
      --device cuda --out "$out/hmc_quality.jsonl" 2>&1 | tee "$out/$stage.log" ;;
esac
