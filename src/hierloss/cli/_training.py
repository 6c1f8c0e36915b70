"""The small training loop of ``hierloss demo``: one MLP per recipe, trained alike, scored on a test split.

Every recipe (:mod:`hierloss.recipes`: its criterion, its stages, its head) trains the same MLP (three linear
layers, ReLU, dropout) from the same initial weights and the same batch order with Adam, and its model is scored
on the test split through the recipe's head, then through ``coherent`` as well when that head is the plain
sigmoid. Private to the demo: the benchmark harness (``benchmarks/hmc_experiments.py``) has its own loop.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hierloss import recipes
from hierloss.hierarchy import Hierarchy

__all__ = ["Result", "compare"]

#: Adam's weight decay (the demo has no option for it).
WEIGHT_DECAY = 1e-5


@dataclass(frozen=True)
class Result:
    """One row of the demo's table: a recipe's scores on the test split, by name: ``auprc``, ``auroc``,
    ``violation_05``, ``violation_any`` (fractions of test samples) and ``hf1``."""

    recipe: str
    scores: dict[str, float]
    train_s: float
    same_model: bool = False  # the row above's model, scored through another head

    @property
    def name(self) -> str:
        """The recipe's title: ``'BCE'``, ``'BCE + coherent'``, ``'MCLoss'``, ..."""
        return recipes.spec(self.recipe).title

    @property
    def head(self) -> str:
        """The recipe's head: ``'sigmoid'``, ``'coherent'``, ``'max-constraint'`` or ``'chain-rule'``."""
        return recipes.spec(self.recipe).head


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


def _fit(recipe: recipes.Recipe, features: Tensor, target: Tensor, settings: argparse.Namespace,
         progress: bool) -> tuple[nn.Module, float]:
    """A fresh MLP trained with ``recipe`` on the device's ``(features, target)``, with the demo's ``--hidden``,
    ``--dropout``, ``--lr``, ``--batch-size``, ``--epochs`` and ``--seed`` (``settings``); and the epochs' time in
    seconds."""
    torch.manual_seed(settings.seed)
    widths = (features.shape[1], settings.hidden, settings.hidden)
    hidden = [layer for a, b in itertools.pairwise(widths)
              for layer in (nn.Linear(a, b), nn.ReLU(), nn.Dropout(settings.dropout))]
    model = nn.Sequential(*hidden, nn.Linear(settings.hidden, target.shape[1])).to(features.device)
    fused = features.device.type in ("cpu", "cuda")  # the same Adam, faster at small batches
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=WEIGHT_DECAY, fused=fused)
    shuffle = torch.Generator().manual_seed(settings.seed)
    rises = getattr(recipe.criterion, "mode", None) == "hard"  # HBCE hard: its penalty has zero gradient
    note = ("the loss shown includes the paper's penalty, which has zero gradient: it can rise while the model "
            "trains exactly as with BCE (not a divergence)") if rises else None
    bar = _Progress(settings.epochs, recipe.title, progress, note)
    start = time.perf_counter()
    model.train()
    for epoch in range(settings.epochs):
        recipe.set_epoch(epoch, settings.epochs)
        losses = []
        for rows in torch.split(torch.randperm(len(features), generator=shuffle).to(features.device),
                                settings.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = recipe.criterion(model(features[rows]), target[rows])
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        if progress:
            bar.update(float(torch.stack(losses).sum()) / len(losses))
    if features.device.type == "cuda":
        torch.cuda.synchronize(features.device)
    bar.close()
    return model.eval(), time.perf_counter() - start


def _scores(probs: Tensor, truth: Tensor, hierarchy: Hierarchy) -> dict[str, float]:
    from hierloss.metrics import auroc, average_precision, hierarchical_prf, violation_rate

    precision_recall = hierarchical_prf(probs, truth, hierarchy, average="micro")
    return dict(auprc=float(average_precision(probs, truth, average="micro")),
                auroc=float(auroc(probs, truth, average="weighted")),
                violation_05=float(violation_rate(probs, hierarchy, threshold=0.5)),
                violation_any=float(violation_rate(probs, hierarchy, threshold=None)), hf1=float(precision_recall[2]))


def compare(names: Sequence[str], X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, hierarchy: Hierarchy,
            settings: argparse.Namespace, device: str = "cpu", progress: bool = False) -> list[Result]:
    """Train one MLP per recipe of ``names`` and score it on the test split.

    Args:
        names: recipe names (:func:`hierloss.recipes.names`), in table order.
        X_train: ``(N, F)`` training features (NumPy or tensor).
        Y_train: ``(N, C)`` 0/1 training labels in ``hierarchy.labels`` order.
        X_test: test features.
        Y_test: test labels.
        hierarchy: the label hierarchy.
        settings: the demo's parsed arguments: ``hidden``, ``dropout``, ``lr``, ``batch_size``, ``epochs``, ``seed``.
        device: where to train.
        progress: a progress bar per recipe on stderr.

    Returns:
        Per recipe, the row of its head, then (when that head is the sigmoid) the row of the same model after
        ``coherent``.
    """
    from hierloss._validation import check_target

    found = [recipes.spec(name) for name in names]  # every name checked before any training
    features = torch.as_tensor(np.asarray(X_train, dtype=np.float32)).to(device)
    target = torch.as_tensor(np.asarray(Y_train, dtype=np.float32)).to(device)
    if target.shape != (features.shape[0], hierarchy.num_labels):
        raise ValueError(f"Expected `Y` of shape ({features.shape[0]}, {hierarchy.num_labels}), got "
                         f"{tuple(target.shape)}")
    check_target(target, labels=hierarchy.labels)  # once: the criteria need not read values back every step
    test = torch.as_tensor(np.asarray(X_test, dtype=np.float32))
    truth = torch.as_tensor(np.asarray(Y_test))
    results = []
    for spec in found:
        recipe = recipes.get(spec.name, hierarchy).to(device)
        model, seconds = _fit(recipe, features, target, settings, progress)
        heads = [recipe.name] if recipe.coherent_by_construction else [recipe.name, recipe.name + recipes.COHERENT]
        for k, name in enumerate(heads):
            head = recipes.get(name, hierarchy).head.to(device)
            with torch.no_grad():
                probs = torch.cat([head(model(block.to(device))).float().cpu() for block in torch.split(test, 4096)])
            results.append(Result(name, _scores(probs, truth, hierarchy), train_s=seconds, same_model=k > 0))
    return results
