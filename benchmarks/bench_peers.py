"""hierloss's ASL, focal, ZLPR and multi-label softmax losses against their peers: forward+backward time, each
relative to ``BCEWithLogitsLoss`` in the same run, and the peer's value beside hierloss's.

The peers:

* ``AsymmetricLoss``: the ASL authors' formula (Ridnik et al., ICCV 2021), **written plainly** here in the style of
  their ``AsymmetricLoss`` (Alibaba-MIIL/ASL, ``src/loss_functions/losses.py``: sigmoid, asymmetric clipping, a
  clamped log, focusing weights ``pow(1 − p_t, γ)``, the sum as they return it). Their code is not downloaded; this
  transcription is what is timed, with their default settings (γ− = 4, γ+ = 1, clip 0.05, eps 1e-8) and with the
  paper's γ+ = 0.
* ``FocalLoss``: ``torchvision.ops.sigmoid_focal_loss`` when torchvision imports beside this torch (the examples
  environment), else the formula that function documents, written plainly here (the row says which).
* ``ZLPRLoss`` and ``MultiLabelSoftmaxLoss``: their formulas written plainly with ``torch.logsumexp``.

Sizes: CheXpert (4096 × 21) and GO (256 × 4125), the targets ancestor-closed 0/1 as in ``bench_losses.py``.
Timed round-robin (one sample of each per round), medians, so load from other processes falls on all alike.

Run: ``python benchmarks/bench_peers.py [--quick] [--device cuda] [--threads 1] [--baseline OLD/src] [--out F]``
(the suite runner ``benchmarks/run.py --only peers`` calls :func:`run`). ``--baseline`` times another hierloss
source tree (e.g. ``git worktree add /tmp/base HEAD~3``, then ``--baseline /tmp/base/src``) in the same rounds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hierloss
from _hierarchies import benchmark_hierarchy
from _timing import machine, median_seconds_interleaved
from bench_losses import inputs, make_step

__all__ = [
    "PEERS",
    "AuthorsAsymmetricLoss",
    "load_baseline",
    "multilabel_softmax_plain",
    "peer_focal",
    "run",
    "sigmoid_focal_plain",
    "to_markdown",
    "zlpr_plain",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


class AuthorsAsymmetricLoss(nn.Module):
    """The ASL authors' formula, written plainly in the style of their ``AsymmetricLoss`` (not their code).

    Sigmoid; asymmetric clipping ``xs_neg = (1 − p + clip).clamp(max=1)``; ``log(clamp(min=eps))`` of both sides;
    focusing weights ``pow(1 − p_t, γ+·y + γ−·(1 − y))`` multiplied in (gradient through them); ``−sum``, as the
    authors return it.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        p = torch.sigmoid(x)
        xs_pos = p
        xs_neg = 1 - p
        if self.clip > 0:
            xs_neg = (xs_neg + self.clip).clamp(max=1)
        positive_part = y * torch.log(xs_pos.clamp(min=self.eps))
        negative_part = (1 - y) * torch.log(xs_neg.clamp(min=self.eps))
        loss = positive_part + negative_part
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            pt = xs_pos * y + xs_neg * (1 - y)
            gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
            loss = loss * torch.pow(1 - pt, gamma)
        return -loss.sum()


def sigmoid_focal_plain(x: Tensor, y: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """The sigmoid focal loss as ``torchvision.ops.sigmoid_focal_loss`` documents it, written plainly; mean."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean()


def peer_focal() -> tuple[LossFn, str]:
    """``torchvision.ops.sigmoid_focal_loss`` (mean) where torchvision imports, else :func:`sigmoid_focal_plain`."""
    try:
        from torchvision.ops import sigmoid_focal_loss
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return sigmoid_focal_plain, f"the documented formula written plainly (torchvision unavailable: {reason})"
    import torchvision

    return (lambda x, y: sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="mean"),
            f"torchvision {torchvision.__version__} ops.sigmoid_focal_loss")


def zlpr_plain(x: Tensor, y: Tensor) -> Tensor:
    """ZLPR written plainly: ``logsumexp([0, s_Q]) + logsumexp([0, −s_P])`` per sample with ``torch.logsumexp``;
    mean over samples."""
    positive = y > 0.5
    zeros = x.new_zeros(x.shape[0], 1)
    neg_inf = float("-inf")
    negatives = torch.cat([zeros, x.masked_fill(positive, neg_inf)], dim=-1)
    positives = torch.cat([zeros, (-x).masked_fill(~positive, neg_inf)], dim=-1)
    return (torch.logsumexp(negatives, dim=-1) + torch.logsumexp(positives, dim=-1)).mean()


def multilabel_softmax_plain(x: Tensor, y: Tensor) -> Tensor:
    """Multi-label softmax written plainly: each positive's ``softplus(logsumexp_Q x − x_i)``, averaged over the
    sample's positives; mean over samples (every sample here has a negative)."""
    positive = y > 0.5
    lse_negative = torch.logsumexp(x.masked_fill(positive, float("-inf")), dim=-1, keepdim=True)
    terms = F.softplus(lse_negative - x) * positive
    return (terms.sum(-1) / positive.sum(-1).clamp(min=1)).mean()


# name -> (hierloss's loss with its default settings (what is timed), the same loss giving the peer's reduction
# (for the value check), the peer -> (loss, what it is)).
PEERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module], Callable[[], tuple[LossFn, str]]]] = {
    "AsymmetricLoss": (hierloss.AsymmetricLoss, lambda: hierloss.AsymmetricLoss(reduction="sum"),
                       lambda: (AuthorsAsymmetricLoss(), "the ASL authors' formula, written plainly "
                                                         "(γ−=4, γ+=1, clip=0.05, eps=1e-8; their defaults)")),
    "AsymmetricLoss γ+=0": (lambda: hierloss.AsymmetricLoss(gamma_pos=0.0),
                            lambda: hierloss.AsymmetricLoss(gamma_pos=0.0, reduction="sum"),
                            lambda: (AuthorsAsymmetricLoss(gamma_pos=0.0), "the ASL authors' formula, written plainly "
                                                                           "(γ−=4, γ+=0, clip=0.05, eps=1e-8)")),
    "FocalLoss": (hierloss.FocalLoss, hierloss.FocalLoss, peer_focal),
    "ZLPRLoss": (hierloss.ZLPRLoss, hierloss.ZLPRLoss,
                 lambda: (zlpr_plain, "the ZLPR formula written plainly (logsumexp)")),
    "MultiLabelSoftmaxLoss": (hierloss.MultiLabelSoftmaxLoss, hierloss.MultiLabelSoftmaxLoss,
                              lambda: (multilabel_softmax_plain,
                                       "the multi-label softmax formula written plainly (logsumexp, softplus)")),
}


def sizes(quick: bool) -> list[tuple[str, int]]:
    """(hierarchy, N) cases: CheXpert 4096 × 21 and GO 256 × 4125, or small ones for ``--quick``."""
    return [("chexpert", 256), ("go", 16)] if quick else [("chexpert", 4096), ("go", 256)]


def _goal(n: int, quick: bool, device: str, metric: str) -> str:
    if quick or torch.device(device).type != "cpu":
        return ""
    return "<= 3.0" if metric == "time_ratio_vs_bce" else "<= 1.0"


def load_baseline(src: Path) -> dict[str, Callable[[], nn.Module]]:
    """The losses of :data:`PEERS` from another hierloss source tree (``src`` holds its ``hierloss`` package, e.g. a
    ``git worktree``'s ``src``), built with the same settings, to be timed beside this one in the same run.

    That tree's ``hierloss`` is imported under the same name, so the current one's modules are set aside while it
    loads and put back afterwards; each loss is resolved (its module imported) before that.
    """
    mine = {k: v for k, v in sys.modules.items() if k == "hierloss" or k.startswith("hierloss.")}
    for k in mine:
        del sys.modules[k]
    sys.path.insert(0, str(src))
    try:
        other = importlib.import_module("hierloss")
        if not Path(other.__file__ or "").resolve().is_relative_to(src.resolve()):
            raise ImportError(f"no hierloss package under {src}")
        classes = {name: getattr(other, name) for name in
                   ("AsymmetricLoss", "FocalLoss", "ZLPRLoss", "MultiLabelSoftmaxLoss")}
    finally:
        sys.path.remove(str(src))
        for k in [k for k in sys.modules if k == "hierloss" or k.startswith("hierloss.")]:
            del sys.modules[k]
        sys.modules.update(mine)
    return {"AsymmetricLoss": classes["AsymmetricLoss"],
            "AsymmetricLoss γ+=0": lambda: classes["AsymmetricLoss"](gamma_pos=0.0),
            "FocalLoss": classes["FocalLoss"], "ZLPRLoss": classes["ZLPRLoss"],
            "MultiLabelSoftmaxLoss": classes["MultiLabelSoftmaxLoss"]}


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32", compile: bool = False,
        losses: list[str] | None = None, baseline: Path | None = None) -> list[dict[str, Any]]:
    """Rows for the suite runner: per case, BCE's time, then each loss's and its peer's ratio to BCE, the ratio
    hierloss / peer, and how far the two values lie apart (relative). With ``baseline`` (a source tree, see
    :func:`load_baseline`) that hierloss's losses are timed in the same rounds too (metric
    ``baseline_time_ratio_vs_bce``).

    Eager float32 only, as the peers are written: with another ``dtype`` there are no rows, and ``compile=True``
    times eager all the same (both said on stderr).
    """
    if dtype != "fp32":
        print(f"peers: float32 only, nothing timed for --dtype {dtype}", file=sys.stderr)
        return []
    if compile:
        print("peers: eager only (the peers are eager code); --compile ignored", file=sys.stderr)
    names = list(PEERS) if losses is None else losses
    base_losses = load_baseline(baseline) if baseline is not None else {}
    warmup, repeat, min_time = (1, 3, 0.002) if quick else (2, 11, 0.05)
    rows: list[dict[str, Any]] = []
    for hname, n in sizes(quick):
        h, label = benchmark_hierarchy(hname)
        x, y = inputs(h, n, device, dtype)
        fns: dict[str, LossFn] = {"BCEWithLogitsLoss": nn.BCEWithLogitsLoss()}
        what: dict[str, str] = {}
        agreement: dict[str, float] = {}
        for name in names:
            ours, comparable, peer = PEERS[name]
            fns[name] = ours().to(device)
            fns[f"peer {name}"], what[name] = peer()
            if name in base_losses:
                fns[f"baseline {name}"] = base_losses[name]().to(device)
            with torch.no_grad():
                a, b = comparable().to(device)(x, y), fns[f"peer {name}"](x, y)
                agreement[name] = float((a - b).abs() / b.abs().clamp_min(1e-30))
        steps = {k: make_step(fn, x, y, device=device) for k, fn in fns.items()}
        times = median_seconds_interleaved(steps, device=device, warmup=warmup, repeat=repeat, min_time=min_time)
        case = f"{label} N={n} C={h.num_labels} {dtype} eager"
        base = times["BCEWithLogitsLoss"]
        rows.append({"group": "peers", "case": case, "loss": "BCEWithLogitsLoss", "n": n, "seconds": base,
                     "metric": "bce_median_ms", "value": base * 1e3, "goal": "", "note": "torch.nn.BCEWithLogitsLoss"})
        for name in names:
            ours, peer = times[name], times[f"peer {name}"]
            common = {"group": "peers", "case": case, "loss": name, "n": n}
            rows.append({**common, "metric": "time_ratio_vs_bce", "seconds": ours, "value": ours / base,
                         "goal": _goal(n, quick, device, "time_ratio_vs_bce"),
                         "note": f"hierloss {name}: {ours * 1e3:.3f} ms"})
            rows.append({**common, "metric": "peer_time_ratio_vs_bce", "seconds": peer, "value": peer / base,
                         "goal": "", "peer": what[name], "note": f"peer: {what[name]}: {peer * 1e3:.3f} ms"})
            if f"baseline {name}" in times:
                before = times[f"baseline {name}"]
                rows.append({**common, "metric": "baseline_time_ratio_vs_bce", "seconds": before,
                             "value": before / base, "goal": "",
                             "note": f"hierloss at {baseline}: {before * 1e3:.3f} ms"})
            rows.append({**common, "metric": "time_ratio_vs_peer", "value": ours / peer,
                         "goal": _goal(n, quick, device, "time_ratio_vs_peer"),
                         "agreement": agreement[name],
                         "note": f"values agree to {agreement[name]:.1e} (relative)" if agreement[name] else
                                 "values agree to 0 (bit for bit)"})
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per (case, loss): hierloss ÷ BCE (and the baseline's, when timed), peer ÷ BCE, hierloss ÷ peer,
    how far the values lie apart, and what the peer is."""
    with_baseline = any(r["metric"] == "baseline_time_ratio_vs_bce" for r in rows)
    head = ["case", "loss", *(["baseline ÷ BCE"] if with_baseline else []), "hierloss ÷ BCE", "peer ÷ BCE",
            "hierloss ÷ peer", "values agree to", "peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell = {(r["case"], r["loss"], r["metric"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        bce = cell[(case, "BCEWithLogitsLoss", "bce_median_ms")]
        lines.append(f"| {case} | BCEWithLogitsLoss | {bce['value']:.3g} ms |" + " |" * (len(head) - 3))
        for loss in dict.fromkeys(r["loss"] for r in rows if r["case"] == case and r["loss"] != "BCEWithLogitsLoss"):
            ours, peer = cell[(case, loss, "time_ratio_vs_bce")], cell[(case, loss, "peer_time_ratio_vs_bce")]
            versus = cell[(case, loss, "time_ratio_vs_peer")]
            before = cell.get((case, loss, "baseline_time_ratio_vs_bce"))
            agree = f"{versus['agreement']:.1e}" if versus["agreement"] else "0 (bit for bit)"
            cells = [case, loss, *([f"{before['value']:.2f}×" if before else ""] if with_baseline else []),
                     f"{ours['value']:.2f}×", f"{peer['value']:.2f}×", f"{versus['value']:.2f}×", agree, peer["peer"]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another hierloss source tree (e.g. a git worktree's src) to time beside this one")
    parser.add_argument("--out", type=Path, help="write the rows and the machine description as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = machine(args.device, args.threads)
    start = time.perf_counter()
    rows = run(quick=args.quick, device=args.device, baseline=args.baseline)
    meta["load_average_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.perf_counter() - start, 1)
    meta["baseline"] = None if args.baseline is None else str(args.baseline)
    print(to_markdown(rows))
    print(f"\n({meta['elapsed_s']:.0f} s, {args.threads} torch thread(s), load average "
          f"{meta['load_average_start'][0]:.2f} at start, {meta['load_average_end'][0]:.2f} at end)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows, "errors": []}, indent=1, default=str))
