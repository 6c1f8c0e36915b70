"""Training throughput of the paper's model (images/s) on synthetic inputs: batch sizes × AMP on/off.

    python examples/chexpert/benchmark_throughput.py                       # 320×320, batch 16 and 64, AMP on/off
    python examples/chexpert/benchmark_throughput.py --loader-workers 8    # also the JPEG → tensor pipeline alone

One *training step* is what ``train.py`` does per batch: forward, HBCE loss (``hbce-hard``, data-free fixed
penalties), backward, Adam step (fp32, or with AMP float16 autocast and gradient scaling). Inputs are random
tensors already on the device, so the numbers are the model's ceiling; ``--loader-workers`` separately measures how
many images/s the data pipeline (JPEG decoding, augmentation) delivers from synthetic JPEGs of CheXpert-small's
size (≈ 390 × 320), which must keep up for the ceiling to be reached. AMP is CUDA-only, as in ``train.py``.
Prints a Markdown table and, with ``--json``, writes the numbers and the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torchvision
from chexpert_example.criterion import build_criterion
from chexpert_example.model import CheXpertDenseNet
from torch.utils.data import DataLoader

from hierloss.datasets import chexpert_hierarchy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(batch_size: int, image_size: int, amp: bool, device: torch.device, warmup: int,
                     steps: int) -> float:
    """Images per second of full training steps (forward, loss, backward, Adam) on random inputs."""
    torch.manual_seed(0)
    hierarchy = chexpert_hierarchy()
    model = CheXpertDenseNet(hierarchy.num_labels).to(device).train()
    criterion = build_criterion("hbce-hard", hierarchy, 1.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)  # train.py's defaults
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    target = torch.randint(0, 2, (batch_size, hierarchy.num_labels), device=device).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = criterion(model(images), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - began)


def loader_throughput(image_size: int, batch_size: int, workers: int, images: int) -> float:
    """Images per second the training pipeline (JPEG decode + augmentation + collate) delivers."""
    from chexpert_example.data import CheXpertDataset, build_transform
    from chexpert_example.synthetic import write_synthetic_chexpert

    with tempfile.TemporaryDirectory() as folder:
        splits = write_synthetic_chexpert(folder, n_train=images, n_valid=2, n_test=2, image_height=320,
                                          lateral_fraction=0.0)
        dataset = CheXpertDataset(splits.train_csv, folder, transform=build_transform(image_size, train=True))
        loader = DataLoader(dataset, batch_size, shuffle=True, num_workers=workers, drop_last=True,
                            persistent_workers=workers > 0)
        for _ in loader:  # warm-up epoch: worker start-up, page cache
            pass
        began, seen = time.perf_counter(), 0
        for batch, _ in loader:
            seen += len(batch)
        return seen / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--amp", choices=("off", "on", "both"), default="both")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loader-workers", type=int, nargs="*", default=[],
                        help="also time the data pipeline with these worker counts")
    parser.add_argument("--loader-images", type=int, default=256)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
                          else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_values = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    if device.type != "cuda" and True in amp_values:
        print("AMP is CUDA-only (as in train.py): timing AMP off only", file=sys.stderr)
        amp_values = [False]
    machine = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
               or platform.machine(), "torch": torch.__version__, "torchvision": torchvision.__version__,
               "date": time.strftime("%Y-%m-%d")}
    rows: list[dict[str, Any]] = []
    print(f"| what | image size | batch | AMP | images/s |  ({machine['device']}, torch {machine['torch']})")
    print("|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        for amp in amp_values:
            rate = train_throughput(batch_size, args.image_size, amp, device, args.warmup, args.steps)
            rows.append({"what": "train step", "image_size": args.image_size, "batch_size": batch_size, "amp": amp,
                         "images_per_second": rate})
            print(f"| train step | {args.image_size} | {batch_size} | {'on' if amp else 'off'} | {rate:.1f} |",
                  flush=True)
    for workers in args.loader_workers:
        rate = loader_throughput(args.image_size, args.batch_sizes[0], workers, args.loader_images)
        rows.append({"what": f"data pipeline, {workers} workers", "image_size": args.image_size,
                     "batch_size": args.batch_sizes[0], "amp": None, "images_per_second": rate})
        print(f"| data pipeline, {workers} workers | {args.image_size} | {args.batch_sizes[0]} | - | {rate:.1f} |",
              flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "command": sys.argv, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
