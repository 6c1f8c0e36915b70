"""The HMC benchmark harness behind ``benchmarks/hmc_quality.py``: C-HMCNN's network, trained and scored the way the
benchmark's rows were made, one network at a time or many (recipe, seed) networks stacked.

What each run trains with and predicts with comes from :mod:`hierloss.recipes`: a run trains one recipe's training
(its criterion and, for ``conditional-ft``, its stages) and is scored through that recipe's head, and again after
``coherent`` when the head is the plain sigmoid (so ``bce`` gives the rows "BCE" and "BCE + coherent"). The loop is
this harness's own, not the demo's: the rows in ``benchmarks/results/hmc_quality.jsonl`` were made by it, so it
changes with the protocol only. The same MLP (C-HMCNN's: 3 linear layers, ReLU, dropout), Adam and batch order
serve every recipe: a seed fixes the initial weights and the batches, so the recipes of one seed are paired.

Scoring leaves the three Gene Ontology roots out of AU(PRC) and AUROC by default, as C-HMCNN does
(:data:`SKIPPED_LABELS`; every scoring function here has that one default). :func:`train_stacked` /
:class:`StackedMLP` train every (recipe, seed) network of a dataset as one model, each step replayed as a CUDA
graph on a GPU.
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

from hierloss import recipes
from hierloss.hierarchy import Hierarchy
from hierloss.losses import ConditionalBCELoss

__all__ = [
    "DEFAULT_LOSSES",
    "SKIPPED_LABELS",
    "TRAININGS",
    "Result",
    "StackedMLP",
    "TrainConfig",
    "TrainedModel",
    "build_mlp",
    "compare_losses",
    "evaluate",
    "outputs",
    "recipe_of",
    "score",
    "train",
    "train_stacked",
]

#: Labels C-HMCNN leaves out of AU(PRC): the three Gene Ontology roots (its ``to_skip``; the artificial ``root``
#: is never a label in hierloss).
SKIPPED_LABELS: tuple[str, ...] = ("GO0003674", "GO0005575", "GO0008150")
#: The recipes a run can train: those whose training is their own (``bce+coherent`` is ``bce``'s model, scored
#: through another head), in the table's order.
TRAININGS: tuple[str, ...] = tuple(name for name in recipes.names() if recipes.spec(name).training == name)
#: What ``hmc_quality.py`` trains unless told otherwise.
DEFAULT_LOSSES: tuple[str, ...] = ("bce", "hbce", "hbce-hard", "mcloss")


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimiser settings; the defaults are C-HMCNN's (hidden size, epochs and lr vary per dataset)."""

    hidden: int = 500
    num_layers: int = 3
    dropout: float = 0.7
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = 4
    epochs: int = 100
    seed: int = 0
    device: str = "cpu"


def recipe_of(loss: str, output: str) -> str:
    """The recipe a row scored: its training ``loss``, through ``coherent`` when ``output`` is ``'coherent'``."""
    return loss + recipes.COHERENT if output == "coherent" else loss


def outputs(loss: str, with_coherent: bool = True) -> list[tuple[str, str]]:
    """``(output, recipe)`` of each way a model trained with ``loss`` is scored: through its recipe's head
    (``'raw'`` for the sigmoid), then after ``coherent`` unless the head is coherent by construction."""
    found = recipes.spec(loss)
    if found.training != loss:
        raise ValueError(f"{loss!r} is not a training: train {found.training!r} (its outputs after `coherent` are "
                         "scored too)")
    out = [("raw" if found.head == "sigmoid" else found.head, loss)]
    if with_coherent and not found.coherent_by_construction:
        out.append(("coherent", loss + recipes.COHERENT))
    return out


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
        """Display name, the recipe's title: ``'BCE'``, ``'BCE + coherent'``, ``'MCLoss'``, ..."""
        return recipes.spec(recipe_of(self.loss, self.output)).title

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


class _EpochLog:
    """Progress on stderr, a line every tenth of the epochs, when ``enabled``."""

    def __init__(self, desc: str, total: int, enabled: bool) -> None:
        self.desc, self.total, self.enabled, self.done = desc, total, enabled, 0

    def __call__(self, loss: float) -> None:
        self.done += 1
        if self.enabled and (self.done == self.total or self.done % max(1, self.total // 10) == 0):
            print(f"{self.desc}: epoch {self.done}/{self.total}, loss {loss:.4f}", file=sys.stderr, flush=True)


@dataclass
class TrainedModel:
    """A trained MLP, the recipe whose training it had, and its training time in seconds."""

    loss: str
    model: nn.Module
    hierarchy: Hierarchy
    seconds: float
    epochs: int

    @torch.no_grad()
    def predict(self, X: Any, recipe: str | None = None, batch_size: int = 4096) -> Tensor:
        """Test-time scores ``(N, C)`` on the CPU through the head of ``recipe`` (default: the training's own)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        head = recipes.get(recipe or self.loss, self.hierarchy).head.to(device)
        features = torch.as_tensor(np.asarray(X, dtype=np.float32))
        chunks = [head(self.model(block.to(device))).float().cpu() for block in torch.split(features, batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.hierarchy.num_labels)


def _training_tensors(X: Any, Y: Any, hierarchy: Hierarchy, device: torch.device) -> tuple[Tensor, Tensor]:
    """``X`` and ``Y`` as float32 tensors on ``device``, ``Y`` checked once: shape ``(N, hierarchy.num_labels)``,
    values in ``[0, 1]`` (so the criteria can be built with ``validate_args=False``)."""
    features = torch.as_tensor(np.asarray(X, dtype=np.float32))
    target = torch.as_tensor(np.asarray(Y, dtype=np.float32))
    if target.shape != (features.shape[0], hierarchy.num_labels):
        raise ValueError(f"Expected `Y` of shape ({features.shape[0]}, {hierarchy.num_labels}), got "
                         f"{tuple(target.shape)}")
    bad = ~((target >= 0) & (target <= 1))  # NaN too
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"`Y` column {col} ({hierarchy.labels[col]!r}) holds {float(target[row, col])}; expected "
                         "values in [0, 1]")
    return features.to(device), target.to(device)


def train(loss: str, X: Any, Y: Any, hierarchy: Hierarchy, config: TrainConfig = TrainConfig(),
          progress: bool = False) -> TrainedModel:
    """Train a fresh :func:`build_mlp` on ``(X, Y)`` with the training of the recipe ``loss``.

    The seed fixes the initial weights and the batch order, so every recipe starts from the same model and sees the
    same batches. The time covers the epochs only (data already on the device).

    Args:
        loss: one of :data:`TRAININGS`.
        X: ``(N, F)`` features (NumPy or tensor).
        Y: ``(N, C)`` 0/1 ancestor-closed labels in ``hierarchy.labels`` order.
        hierarchy: the label hierarchy.
        config: model and optimiser settings.
        progress: a line on stderr every tenth of the epochs.
    """
    outputs(loss)  # refuses a name that is not a training
    device = torch.device(config.device)
    features, target = _training_tensors(X, Y, hierarchy, device)
    recipe = recipes.get(loss, hierarchy).to(device)
    torch.manual_seed(config.seed)
    model = build_mlp(features.shape[1], hierarchy.num_labels, config.hidden, config.num_layers,
                      config.dropout).to(device)
    # The fused kernel is the same Adam, about twice as fast at C-HMCNN's batch size of 4 on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    order = torch.Generator().manual_seed(config.seed)
    log = _EpochLog(recipe.title, config.epochs, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        recipe.set_epoch(epoch, config.epochs)
        total = torch.zeros((), device=device)
        batches = torch.split(torch.randperm(features.shape[0], generator=order).to(device), config.batch_size)
        for idx in batches:
            optimizer.zero_grad(set_to_none=True)
            value = recipe.criterion(model(features[idx]), target[idx])
            value.backward()
            optimizer.step()
            total += value.detach()
        if progress:
            log(float(total) / max(len(batches), 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return TrainedModel(loss=loss, model=model, hierarchy=hierarchy, seconds=seconds, epochs=config.epochs)


def evaluate(probs: Any, target: Any, hierarchy: Hierarchy,
             skipped_labels: Iterable[str] = SKIPPED_LABELS) -> dict[str, float]:
    """Score ``(N, C)`` probabilities against 0/1 targets.

    Returns ``auprc`` (micro average precision, C-HMCNN's AU(PRC)), ``auroc`` (weighted by positives; labels
    without both classes in the test split are left out), ``violation_05`` and ``violation_any`` (fraction of
    samples with a violated edge at threshold 0.5 and at some threshold, :func:`~hierloss.metrics.violation_rate`)
    and ``hf1`` (micro hierarchical F1 at 0.5). Labels named in ``skipped_labels`` (default: the Gene Ontology
    roots, as C-HMCNN) are left out of AU(PRC) and AUROC only.
    """
    from hierloss.metrics import auroc, average_precision, hierarchical_prf, violation_rate

    scores = torch.as_tensor(np.asarray(probs, dtype=np.float32)) if not isinstance(probs, Tensor) else probs
    truth = torch.as_tensor(np.asarray(target)) if not isinstance(target, Tensor) else target
    skipped = set(skipped_labels)
    columns = torch.tensor([i for i, name in enumerate(hierarchy.labels) if name not in skipped], dtype=torch.long)
    ranked, ranked_truth = scores.index_select(1, columns), truth.index_select(1, columns)
    return {
        "auprc": float(average_precision(ranked, ranked_truth, average="micro")),
        "auroc": float(auroc(ranked, ranked_truth, average="weighted")),
        "violation_05": float(violation_rate(scores, hierarchy, threshold=0.5)),
        "violation_any": float(violation_rate(scores, hierarchy, threshold=None)),
        "hf1": float(hierarchical_prf(scores, truth, hierarchy, average="micro")[2]),
    }


def score(trained: TrainedModel, X_test: Any, Y_test: Any, with_coherent: bool = True,
          on_result: Callable[[Result], None] | None = None,
          skipped_labels: Iterable[str] = SKIPPED_LABELS) -> list[Result]:
    """Score a trained model on the test split through each of its :func:`outputs`: its recipe's head (the sigmoid,
    ``MaxConstraint`` for MCLoss, the chain rule for conditional training), then ``coherent`` when that head is the
    plain sigmoid and ``with_coherent``.

    ``on_result`` is called with each :class:`Result` as soon as it exists; ``skipped_labels`` (default: the Gene
    Ontology roots) are left out of AU(PRC) and AUROC.
    """
    stages = recipes.spec(trained.loss).stage_epochs(trained.epochs)
    extra = {"fine_tune_epochs": stages[-1]} if len(stages) > 1 else {}
    results = []
    for output, recipe in outputs(trained.loss, with_coherent):
        scores = evaluate(trained.predict(X_test, recipe), Y_test, trained.hierarchy, skipped_labels)
        result = Result(loss=trained.loss, output=output, train_s=trained.seconds, epochs=trained.epochs,
                        extra=extra, **scores)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def compare_losses(X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, hierarchy: Hierarchy,
                   losses: Sequence[str] = DEFAULT_LOSSES, config: TrainConfig = TrainConfig(),
                   with_coherent: bool = True, progress: bool = False,
                   on_result: Callable[[Result], None] | None = None,
                   skipped_labels: Iterable[str] = SKIPPED_LABELS) -> list[Result]:
    """Train one model per recipe of ``losses`` (one seed, ``config.seed``) and :func:`score` each.

    Args:
        X_train: ``(N, F)`` training features (NumPy or tensor).
        Y_train: ``(N, C)`` 0/1 training labels in ``hierarchy.labels`` order.
        X_test: test features.
        Y_test: test labels.
        hierarchy: the label hierarchy.
        losses: names of :data:`TRAININGS`, in table order.
        config: model and optimiser settings (one seed).
        with_coherent: also score each model whose head is the sigmoid after ``coherent``.
        progress: progress lines on stderr.
        on_result: called with each :class:`Result` as soon as it exists (e.g. to append it to a file).
        skipped_labels: labels left out of AU(PRC) and AUROC (default: the Gene Ontology roots).

    Returns:
        The results in order: per recipe its head's output, then its coherent one.
    """
    for loss in losses:
        outputs(loss)  # every name checked before any training
    results: list[Result] = []
    for loss in losses:
        trained = train(loss, X_train, Y_train, hierarchy, config, progress)
        results += score(trained, X_test, Y_test, with_coherent, on_result, skipped_labels)
    return results


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
    """Train one network per ``(recipe, seed)`` of ``runs`` at once, as one :class:`StackedMLP`.

    Network ``(recipe, seed)`` starts from the weights :func:`train` gives that seed and sees, step by step, the
    batches :func:`train` gives that seed; its gradient is that of its own criterion and Adam is element-wise, so it
    is trained as by ``train(recipe, ..., replace(config, seed=seed))``. Only the dropout masks are drawn
    differently (and ``bmm`` rounds differently from ``addmm``): the result is another draw of the same training,
    not a bit-for-bit copy. ``config.seed`` is not used.

    On CUDA, each full-size step (forward, the losses, backward and Adam) is captured once as a CUDA graph and
    replayed (``cuda_graph=None`` means: on CUDA devices): at batch size 4 a step is dozens of tiny kernels, and
    replaying them costs a fraction of launching them from Python. Capture needs three warm-up steps; the weights
    and Adam's state are restored afterwards, so the warm-up leaves no trace. The last, smaller batch of an epoch
    (when the batch size does not divide ``N``) runs eagerly. A staged recipe's criterion computes both stages in
    the captured step and weighs them by a buffer that the epoch's stage sets in place (``StagedLoss(branch_free)``).

    Args:
        runs: distinct ``(recipe, seed)`` pairs; recipes of :data:`TRAININGS`.
        X: ``(N, F)`` features (NumPy or tensor).
        Y: ``(N, C)`` 0/1 ancestor-closed labels in ``hierarchy.labels`` order.
        hierarchy: the label hierarchy.
        config: model and optimiser settings shared by every network (``seed`` ignored); ``None``: the defaults.
        progress: a line on stderr every tenth of the epochs (it reads the loss once per epoch).
        cuda_graph: replay each step as a CUDA graph; ``None``: when ``config.device`` is a CUDA device.

    Returns:
        One :class:`TrainedModel` per run, in the order of ``runs``; ``seconds`` is the stack's training time
        divided by the number of networks.
    """
    config = TrainConfig() if config is None else config
    runs = [(str(loss), int(seed)) for loss, seed in runs]
    if not runs:
        raise ValueError("`runs` is empty: expected at least one (recipe, seed) pair")
    for loss, seed in runs:
        if loss not in TRAININGS:
            raise ValueError(f"unknown training {loss!r} in run ({loss!r}, {seed}); expected one of "
                             f"{', '.join(TRAININGS)}")
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

    # Networks ordered by recipe, so each criterion sees one contiguous slice of the stack. The criteria skip the
    # per-call value checks (validate_args=False): they read values back, which a CUDA graph cannot capture.
    order = sorted(range(len(runs)), key=lambda i: (TRAININGS.index(runs[i][0]), runs[i][1]))
    stacked = [runs[i] for i in order]
    groups: list[tuple[recipes.Recipe, int, int]] = []
    for loss in dict.fromkeys(loss for loss, _ in stacked):
        members = [i for i, run in enumerate(stacked) if run[0] == loss]
        recipe = recipes.get(loss, hierarchy, validate_args=False).to(device)
        if isinstance(recipe.criterion, recipes.StagedLoss):
            recipe.criterion.branch_free = cuda_graph  # the captured step must hold every stage
        groups.append((recipe, members[0], members[-1] + 1))
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
    # ConditionalBCELoss averages over the terms it keeps, which differ between networks' batches: a recipe that
    # trains with it (in any stage) is called once per network, so each is trained on its own mean as by train().
    per_network = {recipe.name for recipe, _, _ in groups
                   if any(isinstance(stage, ConditionalBCELoss) for stage in recipe.stages)}

    def step_loss(idx: Tensor) -> Tensor:
        # Each other criterion averages over its networks' samples; times the count = the sum of their losses.
        logits = model(features[idx])
        batch = target[idx]
        total = torch.zeros((), device=device)
        for recipe, lo, hi in groups:
            if recipe.name in per_network:
                for k in range(lo, hi):
                    total = total + recipe.criterion(logits[k], batch[k])
            else:
                total = total + recipe.criterion(logits[lo:hi].reshape(-1, num_labels),
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
    log = _EpochLog(f"{len(stacked)} networks", config.epochs, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        for recipe, _, _ in groups:
            recipe.set_epoch(epoch, config.epochs)  # a staged recipe: an in-place switch the graph replays
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
            log(float(total) / max(len(stacked) * -(-num_samples // size), 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / len(stacked)
    model.eval()
    trained = {run: TrainedModel(loss=run[0], model=model.unstack(i), hierarchy=hierarchy, seconds=seconds,
                                 epochs=config.epochs) for i, run in enumerate(stacked)}
    return [trained[run] for run in runs]
