"""Time the README's synthetic smoke run and record the machine: the source of the README's smoke-run time.

    python examples/chexpert/measure_smoke_run.py --repeats 3 --json examples/chexpert/results/smoke_run_cpu.json

Runs ``train.py --synthetic --epochs 1 --image-size 64 --out TMP --no-progress`` ``--repeats`` times, each in a
fresh process and folder (so each pays Python's and torch's start-up, as a user does), and writes the wall-clock
seconds with the date, the command, the CPU, the core count, the load average before and after (other work on the
machine slows the run), and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent
SMOKE = ["--synthetic", "--epochs", "1", "--image-size", "64"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the record here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    import torch
    import torchvision

    seconds, loads = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, str(EXAMPLE / "train.py"), *SMOKE, "--out", str(Path(folder) / "run"),
                       "--no-progress"]
            before = os.getloadavg()[0]
            began = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, text=True)
            seconds.append(round(time.perf_counter() - began, 1))
            loads.append({"before": round(before, 2), "after": round(os.getloadavg()[0], 2)})
        print(f"{seconds[-1]:.1f} s (1-minute load average {loads[-1]['before']} → {loads[-1]['after']})", flush=True)
    record = {
        "what": "wall-clock seconds of the README's synthetic smoke run, start-up included",
        "command": "python examples/chexpert/train.py " + " ".join(SMOKE) + " --out OUT --no-progress",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": _cpu_model(), "cores": _cores(), "system": platform.system(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "threads": torch.get_num_threads()},
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "load_average_1min": loads,
        "measured_by": "python examples/chexpert/measure_smoke_run.py " + " ".join(argv or sys.argv[1:]),
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"median {record['median_seconds']:.1f} s over {args.repeats} runs on {record['machine']['cores']} cores "
          f"({record['machine']['cpu']})")
    return record


if __name__ == "__main__":
    main()
