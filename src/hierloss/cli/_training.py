"""The small training loop of ``hierloss demo``: one MLP per loss, trained alike, scored on a test split.

One MLP per loss (C-HMCNN's architecture: ``num_layers`` linear layers, ReLU, dropout), trained with Adam on the
training split from the same initial weights and the same batch order, then scored on the test split. Every
model that is not coherent by construction is scored twice: its raw sigmoid outputs, and the same outputs after
:func:`hierloss.metrics.coherent` (``'max'``). MCLoss is scored on C-HMCNN's inference output,
``MaxConstraint(sigmoid(logits))``, which is coherent by construction. Private: the benchmark harness
(``benchmarks/hmc_experiments.py``) builds on it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hierloss.cli._losses import (
    COHERENT_BY_CONSTRUCTION,
    DEFAULT_LOSSES,
    LOSSES,
    ZERO_GRADIENT_PENALTY,
    fine_tune_epochs,
)
from hierloss.hierarchy import Hierarchy

__all__ = [
    "DEFAULT_LOSSES",
    "LOSSES",
    "ConditionalThenMarginal",
    "Result",
    "TrainConfig",
    "TrainedModel",
    "build_criterion",
    "build_mlp",
    "compare_losses",
    "evaluate",
    "score",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimiser settings; the defaults are C-HMCNN's (hidden size and epochs vary per dataset)."""

    hidden: int = 500
    num_layers: int = 3
    dropout: float = 0.7
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = 4
    epochs: int = 100
    seed: int = 0
    device: str = "cpu"


@dataclass
class Result:
    """Scores of one model output on the test split; rates are fractions of test samples."""

    loss: str
    output: str  # 'raw', 'coherent', 'max-constraint' (MCLoss) or 'chain-rule' (conditional)
    auprc: float
    auroc: float
    violation_05: float
    violation_any: float
    hf1: float
    train_s: float
    epochs: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Display name: ``'BCE'``, ``'BCE + coherent'``, ``'MCLoss'``, ..."""
        base = LOSSES.get(self.loss, self.loss)
        return f"{base} + coherent" if self.output == "coherent" else base

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``extra`` merged in)."""
        out = asdict(self)
        extra = out.pop("extra")
        out.update(extra)
        return out


def build_mlp(in_features: int, out_features: int, hidden: int = 500, num_layers: int = 3,
              dropout: float = 0.7) -> nn.Sequential:
    """C-HMCNN's MLP: ``num_layers`` linear layers with ReLU and dropout between them; outputs logits ``(N, C)``."""
    if num_layers < 1:
        raise ValueError(f"`num_layers` must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def build_criterion(loss: str, hierarchy: Hierarchy, validate_args: bool = True) -> nn.Module:
    """The training criterion named ``loss`` (a key of :data:`LOSSES`), called as ``criterion(logits, target)``.

    ``'bce'``: ``nn.BCEWithLogitsLoss``; ``'hbce'``: ``HBCELoss(hierarchy)`` (default mode); ``'hbce-hard'``:
    ``HBCELoss(hierarchy, mode='hard')`` (the reference's penalty); ``'mcloss'``: ``MCLoss(hierarchy)``;
    ``'hbce-hinge'``: ``HBCELoss(hierarchy, mode='hinge', scale=1.0)`` (the probability hinge, hierloss's default
    before 0.1's ``'logit_hinge'``); ``'conditional'``: ``ConditionalBCELoss(hierarchy)`` (conditional training:
    its model predicts through the chain rule); ``'conditional-ft'``: :class:`ConditionalThenMarginal` (conditional
    training, then fine-tuning on the chain rule's marginals for the last :func:`fine_tune_epochs` epochs).

    ``validate_args`` is passed to hierloss's losses (``False``: no value checks, no host read in ``forward``).
    """
    from hierloss.losses import HBCELoss

    if loss == "bce":
        return nn.BCEWithLogitsLoss()
    if loss == "hbce":
        return HBCELoss(hierarchy, validate_args=validate_args)
    if loss == "hbce-hard":
        return HBCELoss(hierarchy, mode="hard", validate_args=validate_args)
    if loss == "hbce-hinge":
        return HBCELoss(hierarchy, mode="hinge", scale=1.0, validate_args=validate_args)
    if loss == "mcloss":
        from hierloss.losses import MCLoss

        return MCLoss(hierarchy, validate_args=validate_args)
    if loss == "conditional":
        from hierloss.losses import ConditionalBCELoss

        return ConditionalBCELoss(hierarchy, validate_args=validate_args)
    if loss == "conditional-ft":
        return ConditionalThenMarginal(hierarchy, validate_args=validate_args)
    raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")


class ConditionalThenMarginal(nn.Module):
    """The criterion of ``'conditional-ft'``: ``ConditionalBCELoss`` until :meth:`fine_tune` is called, then
    ``ChainRuleBCELoss`` on the same logits (Chen et al.'s two stages).

    ``branch_free=True`` is for a step captured as a CUDA graph in the first stage and replayed in the second: both
    losses are computed and weighed by a 0/1 buffer that :meth:`fine_tune` sets in place (no host synchronisation).
    Otherwise only the current stage's loss is computed.
    """

    stage: Tensor

    def __init__(self, hierarchy: Hierarchy, validate_args: bool = True, branch_free: bool = False) -> None:
        super().__init__()
        from hierloss.losses import ChainRuleBCELoss, ConditionalBCELoss

        self.conditional = ConditionalBCELoss(hierarchy, validate_args=validate_args)
        self.marginal = ChainRuleBCELoss(hierarchy, validate_args=validate_args)
        self.branch_free = branch_free
        self.fine_tuning = False
        self.register_buffer("stage", torch.zeros(()))

    def fine_tune(self, on: bool = True) -> None:
        """Switch to the fine-tuning stage (``on=False``: back to conditional training)."""
        self.fine_tuning = on
        self.stage.fill_(float(on))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        out: Tensor
        if self.branch_free:
            out = torch.lerp(self.conditional(input, target), self.marginal(input, target), self.stage)
        else:
            out = self.marginal(input, target) if self.fine_tuning else self.conditional(input, target)
        return out


def _start_epoch(criterion: nn.Module, epoch: int, epochs: int) -> None:
    """Move a :class:`ConditionalThenMarginal` to its fine-tuning stage at epoch ``epochs - fine_tune_epochs``."""
    if isinstance(criterion, ConditionalThenMarginal):
        criterion.fine_tune(epoch >= epochs - fine_tune_epochs(epochs))


class _Progress:
    """A tqdm bar on stderr when tqdm is installed, else a plain line every tenth of the epochs; ``note`` is printed
    once above it."""

    def __init__(self, total: int, desc: str, enabled: bool, note: str | None = None) -> None:
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0
        self.bar: Any = None
        if enabled and note:
            print(f"{desc}: {note}", file=sys.stderr, flush=True)
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=True,
                                dynamic_ncols=True)

    def update(self, loss: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (self.done == self.total or self.done % max(1, self.total // 10) == 0):
            print(f"{self.desc}: epoch {self.done}/{self.total}, loss {loss:.4f}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class TrainedModel:
    """A trained MLP, the loss it was trained with, and its training time in seconds."""

    loss: str
    model: nn.Module
    hierarchy: Hierarchy
    seconds: float
    epochs: int

    @torch.no_grad()
    def predict(self, X: Any, batch_size: int = 4096) -> Tensor:
        """Test-time probabilities ``(N, C)`` on the CPU: sigmoid outputs; through ``MaxConstraint`` for MCLoss; the
        chain rule's marginals (``ChainRule`` on the logits) for conditional training (with or without fine-tuning)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        features = torch.as_tensor(np.asarray(X, dtype=np.float32))
        head: Callable[[Tensor], Tensor] = torch.sigmoid
        if self.loss == "mcloss":
            from hierloss.layers import MaxConstraint

            constraint = MaxConstraint(self.hierarchy).to(device)
            head = lambda logits: constraint(torch.sigmoid(logits))  # noqa: E731
        elif COHERENT_BY_CONSTRUCTION.get(self.loss) == "chain-rule":
            from hierloss.layers import ChainRule

            head = ChainRule(self.hierarchy).to(device)
        chunks = []
        for block in torch.split(features, batch_size):
            chunks.append(head(self.model(block.to(device))).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.hierarchy.num_labels)


def _training_tensors(X: Any, Y: Any, hierarchy: Hierarchy, device: torch.device) -> tuple[Tensor, Tensor]:
    """``X`` and ``Y`` as float32 tensors on ``device``, ``Y`` checked once: shape ``(N, hierarchy.num_labels)``,
    values in ``[0, 1]`` (so a training loop may build its losses with ``validate_args=False``)."""
    from hierloss._validation import check_target

    features = torch.as_tensor(np.asarray(X, dtype=np.float32)).to(device)
    target = torch.as_tensor(np.asarray(Y, dtype=np.float32)).to(device)
    if target.shape != (features.shape[0], hierarchy.num_labels):
        raise ValueError(f"Expected `Y` of shape ({features.shape[0]}, {hierarchy.num_labels}), got "
                         f"{tuple(target.shape)}")
    check_target(target, labels=hierarchy.labels)
    return features, target


def train(loss: str, X: Any, Y: Any, hierarchy: Hierarchy, config: TrainConfig = TrainConfig(),
          progress: bool = False) -> TrainedModel:
    """Train a fresh :func:`build_mlp` on ``(X, Y)`` with the criterion ``loss``.

    The seed fixes the initial weights and the batch order, so every loss starts from the same model and sees the
    same batches. The time covers the epochs only (data already on the device).

    Args:
        loss: a key of :data:`LOSSES`.
        X: ``(N, F)`` features (NumPy or tensor).
        Y: ``(N, C)`` 0/1 ancestor-closed labels in ``hierarchy.labels`` order.
        hierarchy: the label hierarchy.
        config: model and optimiser settings.
        progress: show a progress bar (tqdm when installed) on stderr.
    """
    device = torch.device(config.device)
    features, target = _training_tensors(X, Y, hierarchy, device)
    criterion = build_criterion(loss, hierarchy).to(device)
    torch.manual_seed(config.seed)
    model = build_mlp(features.shape[1], hierarchy.num_labels, config.hidden, config.num_layers,
                      config.dropout).to(device)
    # The fused kernel is the same Adam, about twice as fast at C-HMCNN's batch size of 4 on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    order = torch.Generator().manual_seed(config.seed)
    note = ("the loss shown includes the paper's penalty, which has zero gradient: it can rise while the model "
            "trains exactly as with BCE (not a divergence)") if loss in ZERO_GRADIENT_PENALTY else None
    bar = _Progress(config.epochs, LOSSES.get(loss, loss), progress, note)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        _start_epoch(criterion, epoch, config.epochs)
        total = torch.zeros((), device=device)
        batches = torch.split(torch.randperm(features.shape[0], generator=order).to(device), config.batch_size)
        for idx in batches:
            optimizer.zero_grad(set_to_none=True)
            value = criterion(model(features[idx]), target[idx])
            value.backward()
            optimizer.step()
            total += value.detach()
        if progress:
            bar.update(float(total) / max(len(batches), 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return TrainedModel(loss=loss, model=model, hierarchy=hierarchy, seconds=seconds, epochs=config.epochs)


def evaluate(probs: Any, target: Any, hierarchy: Hierarchy, skipped_labels: Iterable[str] = ()) -> dict[str, float]:
    """Score ``(N, C)`` probabilities against 0/1 targets.

    Returns ``auprc`` (micro average precision, C-HMCNN's AU(PRC)), ``auroc`` (weighted by positives; labels
    without both classes in the test split are left out), ``violation_05`` and ``violation_any`` (fraction of
    samples with a violated edge at threshold 0.5 and at some threshold, :func:`~hierloss.metrics.violation_rate`)
    and ``hf1`` (micro hierarchical F1 at 0.5). Labels named in ``skipped_labels`` are left out of AU(PRC) and
    AUROC only (the benchmark harness leaves out the Gene Ontology roots, as C-HMCNN does).
    """
    from hierloss.metrics import auroc, average_precision, hierarchical_prf, violation_rate

    scores = torch.as_tensor(np.asarray(probs, dtype=np.float32)) if not isinstance(probs, Tensor) else probs
    truth = torch.as_tensor(np.asarray(target)) if not isinstance(target, Tensor) else target
    skipped = set(skipped_labels)
    keep = [i for i, name in enumerate(hierarchy.labels) if name not in skipped]
    columns = torch.tensor(keep, dtype=torch.long)
    ranked, ranked_truth = scores.index_select(1, columns), truth.index_select(1, columns)
    return {
        "auprc": float(average_precision(ranked, ranked_truth, average="micro")),
        "auroc": float(auroc(ranked, ranked_truth, average="weighted")),
        "violation_05": float(violation_rate(scores, hierarchy, threshold=0.5)),
        "violation_any": float(violation_rate(scores, hierarchy, threshold=None)),
        "hf1": float(hierarchical_prf(scores, truth, hierarchy, average="micro")[2]),
    }


def compare_losses(X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, hierarchy: Hierarchy,
                   losses: Sequence[str] = DEFAULT_LOSSES, config: TrainConfig = TrainConfig(),
                   with_coherent: bool = True, progress: bool = False,
                   on_result: Callable[[Result], None] | None = None,
                   skipped_labels: Iterable[str] = ()) -> list[Result]:
    """Train one model per loss and score it on the test split (raw, and after ``coherent`` unless MCLoss).

    Args:
        X_train: ``(N, F)`` training features (NumPy or tensor).
        Y_train: ``(N, C)`` 0/1 training labels in ``hierarchy.labels`` order.
        X_test: test features.
        Y_test: test labels.
        hierarchy: the label hierarchy.
        losses: keys of :data:`LOSSES`, in table order.
        config: model and optimiser settings (one seed).
        with_coherent: also score each non-MCLoss model after ``coherent(probs, hierarchy, 'max')``.
        progress: show a progress bar per loss on stderr.
        on_result: called with each :class:`Result` as soon as it exists (e.g. to append it to a file).
        skipped_labels: labels left out of AU(PRC) and AUROC (see :func:`evaluate`).

    Returns:
        The results in order: per loss its raw output, then its coherent one.
    """
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        raise ValueError(f"unknown loss {unknown[0]!r}; expected one of {sorted(LOSSES)}")
    results: list[Result] = []
    for loss in losses:
        trained = train(loss, X_train, Y_train, hierarchy, config, progress)
        results += score(trained, X_test, Y_test, with_coherent, on_result, skipped_labels)
    return results


def score(trained: TrainedModel, X_test: Any, Y_test: Any, with_coherent: bool = True,
          on_result: Callable[[Result], None] | None = None, skipped_labels: Iterable[str] = ()) -> list[Result]:
    """Score a trained model on the test split: its output (raw; MaxConstraint for MCLoss; the chain rule for
    conditional training), then that output after ``coherent(probs, hierarchy, 'max')`` unless the model is
    coherent by construction (MCLoss, conditional) or ``with_coherent=False``.

    ``on_result`` is called with each :class:`Result` as soon as it exists; ``skipped_labels`` are left out of
    AU(PRC) and AUROC.
    """
    from hierloss.metrics import coherent

    hierarchy = trained.hierarchy
    probs = trained.predict(X_test)
    outputs = [(COHERENT_BY_CONSTRUCTION.get(trained.loss, "raw"), probs)]
    if with_coherent and trained.loss not in COHERENT_BY_CONSTRUCTION:
        outputs.append(("coherent", coherent(probs, hierarchy, "max")))
    extra = {"fine_tune_epochs": fine_tune_epochs(trained.epochs)} if trained.loss == "conditional-ft" else {}
    results = []
    for output, p in outputs:
        scores = evaluate(p, Y_test, hierarchy, skipped_labels)
        result = Result(loss=trained.loss, output=output, auprc=scores["auprc"], auroc=scores["auroc"],
                        violation_05=scores["violation_05"], violation_any=scores["violation_any"],
                        hf1=scores["hf1"], train_s=trained.seconds, epochs=trained.epochs, extra=extra)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
