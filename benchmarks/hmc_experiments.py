"""The HMC benchmark harness behind ``benchmarks/hmc_quality.py``: C-HMCNN's protocol constants and stacked
training of many (loss, seed) networks at once.

The single-network loop (:func:`train`, :func:`score`, :func:`compare_losses`, ...) is the one ``hierloss demo``
runs (``hierloss.cli._training``), re-exported here; this module adds what only the benchmark needs: the Gene
Ontology roots C-HMCNN leaves out of AU(PRC) (:data:`SKIPPED_LABELS`, passed by :func:`score`), and
:func:`train_stacked` / :class:`StackedMLP`, which train every (loss, seed) network of a dataset as one model,
with each step replayed as a CUDA graph on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hierloss.cli._training import (
    DEFAULT_LOSSES,
    LOSSES,
    ConditionalThenMarginal,
    Result,
    TrainConfig,
    TrainedModel,
    _Progress,
    _start_epoch,
    _training_tensors,
    build_criterion,
    build_mlp,
    compare_losses,
    evaluate,
    train,
)
from hierloss.cli._training import score as _score
from hierloss.hierarchy import Hierarchy
from hierloss.losses import ConditionalBCELoss

__all__ = [
    "DEFAULT_LOSSES",
    "LOSSES",
    "SKIPPED_LABELS",
    "Result",
    "StackedMLP",
    "TrainConfig",
    "TrainedModel",
    "build_criterion",
    "build_mlp",
    "compare_losses",
    "evaluate",
    "score",
    "train",
    "train_stacked",
]

#: Labels C-HMCNN leaves out of AU(PRC): the three Gene Ontology roots (its ``to_skip``; the artificial ``root``
#: is never a label in hierloss).
SKIPPED_LABELS: tuple[str, ...] = ("GO0003674", "GO0005575", "GO0008150")


class StackedMLP(nn.Module):
    """``S`` independent :func:`build_mlp` networks evaluated as one: ``(S, B, F)`` features → ``(S, B, C)`` logits.

    Layer ``k`` holds the ``S`` weight matrices as one ``(S, in, out)`` parameter and the biases as ``(S, 1, out)``,
    so a step is one batched matrix product per layer for all networks, and dropout draws an independent mask for
    every network and sample. Network ``s`` reads only its own parameters, so its gradient is that of its own loss,
    and Adam is element-wise: training the stack trains each network as :func:`train` would alone, up to the
    rounding of ``bmm`` and the dropout draws. Meant for small batches on a GPU, where one network per step leaves
    the device idle (C-HMCNN's batch of 4).

    Args:
        mlps: networks from :func:`build_mlp` with the same shape; their current weights are copied.

    Shape:
        input ``(S, B, F)``; output ``(S, B, C)``.
    """

    def __init__(self, mlps: Sequence[nn.Sequential]) -> None:
        super().__init__()
        if not mlps:
            raise ValueError("`mlps` is empty: expected at least one network")
        layers = [[m for m in mlp if isinstance(m, nn.Linear)] for mlp in mlps]
        shapes = [[tuple(lin.weight.shape) for lin in lins] for lins in layers]
        for i, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(f"network {i} has layer shapes {shape}, network 0 has {shapes[0]}")
        rates = {m.p for mlp in mlps for m in mlp if isinstance(m, nn.Dropout)}
        if len(rates) > 1:
            raise ValueError(f"the networks use different dropout rates {sorted(rates)}")
        self.dropout = rates.pop() if rates else 0.0
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([lins[k].weight.detach().t() for lins in layers]))
            for k in range(len(layers[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([lins[k].bias.detach().unsqueeze(0) for lins in layers]))
            for k in range(len(layers[0])))

    def forward(self, input: Tensor) -> Tensor:
        """Logits ``(S, B, C)`` of every network on its own batch ``input[s]``."""
        out = input
        last = len(self.weights) - 1
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            out = torch.baddbmm(bias, out, weight)
            if k < last:
                out = nn.functional.dropout(torch.relu(out), self.dropout, self.training)
        return out

    def unstack(self, index: int) -> nn.Sequential:
        """Network ``index`` as a plain :func:`build_mlp` network (a copy, on the same device)."""
        widths = [w.shape[1] for w in self.weights] + [self.weights[-1].shape[2]]
        mlp = build_mlp(widths[0], widths[-1], widths[1] if len(widths) > 2 else 1, len(self.weights),
                        self.dropout).to(self.weights[0].device)
        with torch.no_grad():
            for lin, weight, bias in zip([m for m in mlp if isinstance(m, nn.Linear)], self.weights, self.biases):
                lin.weight.copy_(weight[index].t())
                lin.bias.copy_(bias[index, 0])
        return mlp


def train_stacked(runs: Sequence[tuple[str, int]], X: Any, Y: Any, hierarchy: Hierarchy,
                  config: TrainConfig | None = None, progress: bool = False,
                  cuda_graph: bool | None = None) -> list[TrainedModel]:
    """Train one network per ``(loss, seed)`` of ``runs`` at once, as one :class:`StackedMLP`.

    Network ``(loss, seed)`` starts from the weights :func:`train` gives that seed and sees, step by step, the
    batches :func:`train` gives that seed; its gradient is that of its own loss and Adam is element-wise, so it
    is trained as by ``train(loss, ..., replace(config, seed=seed))``. Only the dropout masks are drawn
    differently (and ``bmm`` rounds differently from ``addmm``): the result is another draw of the same training,
    not a bit-for-bit copy. ``config.seed`` is not used.

    On CUDA, each full-size step (forward, the losses, backward and Adam) is captured once as a CUDA graph and
    replayed (``cuda_graph=None`` means: on CUDA devices): at batch size 4 a step is dozens of tiny kernels, and
    replaying them costs a fraction of launching them from Python. Capture needs three warm-up steps; the weights
    and Adam's state are restored afterwards, so the warm-up leaves no trace. The last, smaller batch of an epoch
    (when the batch size does not divide ``N``) runs eagerly.

    Args:
        runs: distinct ``(loss, seed)`` pairs; losses are keys of :data:`LOSSES`.
        X: ``(N, F)`` features (NumPy or tensor).
        Y: ``(N, C)`` 0/1 ancestor-closed labels in ``hierarchy.labels`` order.
        hierarchy: the label hierarchy.
        config: model and optimiser settings shared by every network (``seed`` ignored); ``None``: the defaults.
        progress: show a progress bar over the epochs on stderr (it reads the loss once per epoch).
        cuda_graph: replay each step as a CUDA graph; ``None``: when ``config.device`` is a CUDA device.

    Returns:
        One :class:`TrainedModel` per run, in the order of ``runs``; ``seconds`` is the stack's training time
        divided by the number of networks.
    """
    config = TrainConfig() if config is None else config
    runs = [(str(loss), int(seed)) for loss, seed in runs]
    if not runs:
        raise ValueError("`runs` is empty: expected at least one (loss, seed) pair")
    for loss, seed in runs:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} in run ({loss!r}, {seed}); expected one of {sorted(LOSSES)}")
    repeated = sorted({run for run in runs if runs.count(run) > 1})
    if repeated:
        raise ValueError(f"run {repeated[0]} appears more than once in `runs`")
    device = torch.device(config.device)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"`cuda_graph=True` needs a CUDA device, got device {config.device!r}")
    features, target = _training_tensors(X, Y, hierarchy, device)  # checks Y's values once
    num_samples, num_labels = target.shape

    # Networks ordered by loss, so each criterion sees one contiguous slice of the stack. The criteria skip the
    # per-call value checks (validate_args=False): they read values back, which a CUDA graph cannot capture.
    order = sorted(range(len(runs)), key=lambda i: (list(LOSSES).index(runs[i][0]), runs[i][1]))
    stacked = [runs[i] for i in order]
    groups: list[tuple[nn.Module, int, int]] = []
    for loss in dict.fromkeys(loss for loss, _ in stacked):
        members = [i for i, run in enumerate(stacked) if run[0] == loss]
        criterion = build_criterion(loss, hierarchy, validate_args=False).to(device)
        if isinstance(criterion, ConditionalThenMarginal):
            criterion.branch_free = cuda_graph  # the captured step must hold both stages
        groups.append((criterion, members[0], members[-1] + 1))
    mlps = []
    for _, seed in stacked:
        torch.manual_seed(seed)
        mlps.append(build_mlp(features.shape[1], num_labels, config.hidden, config.num_layers, config.dropout))
    model = StackedMLP(mlps).to(device)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                 fused=device.type in ("cpu", "cuda"), capturable=cuda_graph)
    seeds = sorted({seed for _, seed in stacked})
    generators = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    rows_of = torch.tensor([seeds.index(seed) for _, seed in stacked])

    def step_loss(idx: Tensor) -> Tensor:
        # Each criterion averages over its networks' samples; times the count = the sum of the networks' losses.
        # ConditionalBCELoss averages over the terms it keeps, which differ between networks' batches: one call per
        # network (for conditional-ft's criterion too), so each is trained on its own mean as by train().
        logits = model(features[idx])
        batch = target[idx]
        total = torch.zeros((), device=device)
        for criterion, lo, hi in groups:
            if isinstance(criterion, (ConditionalBCELoss, ConditionalThenMarginal)):
                for k in range(lo, hi):
                    total = total + criterion(logits[k], batch[k])
            else:
                total = total + criterion(logits[lo:hi].reshape(-1, num_labels),
                                          batch[lo:hi].reshape(-1, num_labels)) * (hi - lo)
        return total

    size = config.batch_size
    full_steps = num_samples // size
    graph: Any = None
    static_idx = torch.zeros(len(stacked), size, dtype=torch.long, device=device)
    static_loss = torch.zeros((), device=device)
    model.train()
    if cuda_graph and full_steps:
        saved = [p.detach().clone() for p in params]
        side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step_loss(static_idx).backward()  # type: ignore[no-untyped-call]
                optimizer.step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, stream=side):  # the warm-up stream: its handles and workspaces exist
            static_loss = step_loss(static_idx)
            static_loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
            for state in optimizer.state.values():
                for value in state.values():
                    if isinstance(value, Tensor):
                        value.zero_()
    bar = _Progress(config.epochs, f"{len(stacked)} networks", progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        for criterion, _, _ in groups:
            _start_epoch(criterion, epoch, config.epochs)  # conditional-ft: an in-place switch the graph replays
        perms = torch.stack([torch.randperm(num_samples, generator=generators[seed]) for seed in seeds])
        rows = perms.index_select(0, rows_of).to(device)
        total = torch.zeros((), device=device)
        for i in range(full_steps):
            idx = rows[:, i * size:(i + 1) * size]
            if graph is not None:
                static_idx.copy_(idx)
                graph.replay()
                value = static_loss
            else:
                optimizer.zero_grad(set_to_none=True)
                value = step_loss(idx)
                value.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            if progress:
                total += value.detach()
        if num_samples % size:
            # After a capture, keep the graph's gradient buffers: zero them in place and accumulate into them.
            optimizer.zero_grad(set_to_none=graph is None)
            value = step_loss(rows[:, full_steps * size:])
            value.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if progress:
                total += value.detach()
        if progress:
            bar.update(float(total) / max(len(stacked) * -(-num_samples // size), 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / len(stacked)
    bar.close()
    model.eval()
    trained = {run: TrainedModel(loss=run[0], model=model.unstack(i), hierarchy=hierarchy, seconds=seconds,
                                 epochs=config.epochs) for i, run in enumerate(stacked)}
    return [trained[run] for run in runs]


def score(trained: TrainedModel, X_test: Any, Y_test: Any, with_coherent: bool = True,
          on_result: Callable[[Result], None] | None = None,
          skipped_labels: Iterable[str] = SKIPPED_LABELS) -> list[Result]:
    """:func:`hierloss.cli._training.score` leaving the Gene Ontology roots out of AU(PRC) and AUROC, as C-HMCNN."""
    return _score(trained, X_test, Y_test, with_coherent, on_result, skipped_labels)
