"""Tests for hierloss.experiments: the training/evaluation loop behind `hierloss demo` and the HMC benchmark."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hierloss.datasets import make_hierarchical_classification
from hierloss.experiments import (
    DEFAULT_LOSSES,
    LOSSES,
    StackedMLP,
    TrainConfig,
    build_criterion,
    build_mlp,
    compare_losses,
    evaluate,
    score,
    train,
    train_stacked,
)

CONFIG = TrainConfig(hidden=32, dropout=0.1, lr=1e-3, batch_size=32, epochs=3, seed=0)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return make_hierarchical_classification(400, 10, depth=3, branching=2, dag=True, random_state=0)


def test_evaluate_matches_sklearn_and_naive_counts(data) -> None:  # type: ignore[no-untyped-def]
    h = data.hierarchy
    probs = np.random.default_rng(0).random(data.Y.shape).astype(np.float32)
    got = evaluate(probs, data.Y, h, skipped_labels=(h.labels[0],))
    keep = list(range(1, h.num_labels))
    y, p = data.Y[:, keep], probs[:, keep]
    assert got["auprc"] == pytest.approx(average_precision_score(y.ravel(), p.ravel()), abs=1e-6)
    present = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    assert got["auroc"] == pytest.approx(roc_auc_score(y[:, present], p[:, present], average="weighted"), abs=1e-6)
    parents, children = h.edge_index.numpy()
    at_half = ((probs[:, parents] < 0.5) & (probs[:, children] > 0.5)).any(1).mean()
    anywhere = (probs[:, children] > probs[:, parents]).any(1).mean()
    assert got["violation_05"] == pytest.approx(at_half)
    assert got["violation_any"] == pytest.approx(anywhere)


def test_hard_mode_trains_exactly_like_bce(data) -> None:  # type: ignore[no-untyped-def]
    """The reference penalty has zero gradient: same seed, same batches -> the weights of plain BCE, up to float32
    rounding (hierloss's fused BCE and PyTorch's differ in the last bit); the default penalty moves them."""
    bce = train("bce", data.X, data.Y, data.hierarchy, CONFIG)
    hard = train("hbce-hard", data.X, data.Y, data.hierarchy, CONFIG)
    default = train("hbce", data.X, data.Y, data.hierarchy, CONFIG)
    hard_gap = max((a - b).abs().max().item() for a, b in zip(bce.model.parameters(), hard.model.parameters(),
                                                              strict=True))
    default_gap = max((a - b).abs().max().item() for a, b in zip(bce.model.parameters(),
                                                                 default.model.parameters(), strict=True))
    assert hard_gap < 1e-6
    assert default_gap > 1e-4


def test_compare_losses_rows_and_coherent_outputs(data) -> None:  # type: ignore[no-untyped-def]
    h = data.hierarchy
    results = compare_losses(data.X[:300], data.Y[:300], data.X[300:], data.Y[300:], h, config=CONFIG)
    names = [r.name for r in results]
    assert names == ["BCE", "BCE + coherent", "HBCE", "HBCE + coherent", "HBCE hard", "HBCE hard + coherent",
                     "MCLoss"]
    for r in results:
        assert 0 <= r.auprc <= 1 and 0 <= r.hf1 <= 1 and r.train_s > 0 and r.epochs == CONFIG.epochs
        if r.output != "raw":  # coherent projection and the max-constraint output never violate an edge
            assert r.violation_05 == 0 and r.violation_any == 0


def test_unknown_loss_and_bad_shapes(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'nope'"):
        build_criterion("nope", data.hierarchy)
    with pytest.raises(ValueError, match="'nope'"):
        compare_losses(data.X, data.Y, data.X, data.Y, data.hierarchy, losses=["bce", "nope"], config=CONFIG)
    with pytest.raises(ValueError, match="shape"):
        train("bce", data.X, data.Y[:, :-1], data.hierarchy, CONFIG)
    assert set(LOSSES) == {"bce", "hbce", "hbce-hard", "mcloss", "hbce-hinge"}
    assert DEFAULT_LOSSES == ("bce", "hbce", "hbce-hard", "mcloss")


def test_named_criteria_are_the_documented_losses(data) -> None:  # type: ignore[no-untyped-def]
    """'hbce' is HBCELoss's default (the logit hinge at λ = 0.1); 'hbce-hinge' the probability hinge at λ = 1."""
    from hierloss import HBCELoss

    default, hinge = build_criterion("hbce", data.hierarchy), build_criterion("hbce-hinge", data.hierarchy)
    assert isinstance(default, HBCELoss) and (default.mode, default.scale) == ("logit_hinge", 0.1)
    assert isinstance(hinge, HBCELoss) and (hinge.mode, hinge.scale) == ("hinge", 1.0)


def _max_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                          strict=True))


def test_stacked_training_equals_training_each_network_alone(data) -> None:  # type: ignore[no-untyped-def]
    """Without dropout, the stack trains every (loss, seed) network to the weights `train` gives it alone (same
    initial weights, same batches, its own loss), including a last smaller batch (203 = 50 * 4 + 3)."""
    config = TrainConfig(hidden=32, dropout=0.0, lr=1e-3, batch_size=4, epochs=2)
    X, Y = data.X[:203], data.Y[:203]
    runs = [("mcloss", 1), ("bce", 0), ("hbce", 1), ("hbce-hard", 0), ("bce", 1)]
    stacked = train_stacked(runs, X, Y, data.hierarchy, config)
    assert [(m.loss, m.epochs) for m in stacked] == [(loss, 2) for loss, _ in runs]
    one_epoch = train("bce", X, Y, data.hierarchy, dataclasses.replace(config, seed=0, epochs=1))
    for (loss, seed), got in zip(runs, stacked, strict=True):
        alone = train(loss, X, Y, data.hierarchy, dataclasses.replace(config, seed=seed))
        assert _max_gap(alone.model, got.model) < 1e-6, (loss, seed)
        assert got.seconds > 0
    assert _max_gap(one_epoch.model, stacked[1].model) > 1e-3  # the comparison can tell an epoch apart


def test_stacked_mlp_forward_is_each_network_forward() -> None:
    """In eval mode, network s of the stack gives build_mlp network s's logits, and unstack returns it."""
    mlps = []
    for seed in range(3):
        torch.manual_seed(seed)
        mlps.append(build_mlp(6, 5, hidden=8, num_layers=3, dropout=0.5).eval())
    stack = StackedMLP(mlps).eval()
    x = torch.randn(3, 7, 6)
    out = stack(x)
    assert out.shape == (3, 7, 5)
    for s, mlp in enumerate(mlps):
        torch.testing.assert_close(out[s], mlp(x[s]))
        assert _max_gap(stack.unstack(s), mlp) == 0
    stack.train()
    assert not torch.equal(stack(x), stack(x))  # dropout draws a new mask per call in training mode


def test_stacked_training_with_dropout_is_seeded_and_learns(data) -> None:  # type: ignore[no-untyped-def]
    """With dropout the stack is deterministic for the same runs, and training lowers the test loss."""
    config = TrainConfig(hidden=32, dropout=0.5, lr=1e-3, batch_size=16, epochs=3)
    runs = [("bce", 0), ("hbce", 0)]
    first = train_stacked(runs, data.X[:300], data.Y[:300], data.hierarchy, config)
    again = train_stacked(runs, data.X[:300], data.Y[:300], data.hierarchy, config)
    for a, b in zip(first, again, strict=True):
        assert _max_gap(a.model, b.model) == 0
    scored = score(first[1], data.X[300:], data.Y[300:])
    assert [r.name for r in scored] == ["HBCE", "HBCE + coherent"]
    assert scored[1].violation_any == 0


def test_stacked_training_errors_name_the_offender(data) -> None:  # type: ignore[no-untyped-def]
    h = data.hierarchy
    with pytest.raises(ValueError, match="`runs` is empty"):
        train_stacked([], data.X, data.Y, h, CONFIG)
    with pytest.raises(ValueError, match=r"unknown loss 'nope' in run \('nope', 2\)"):
        train_stacked([("bce", 0), ("nope", 2)], data.X, data.Y, h, CONFIG)
    with pytest.raises(ValueError, match=r"run \('bce', 1\) appears more than once"):
        train_stacked([("bce", 1), ("hbce", 1), ("bce", 1)], data.X, data.Y, h, CONFIG)
    with pytest.raises(ValueError, match="`cuda_graph=True` needs a CUDA device, got device 'cpu'"):
        train_stacked([("bce", 0)], data.X, data.Y, h, CONFIG, cuda_graph=True)
    with pytest.raises(ValueError, match=r"Expected `Y` of shape"):
        train_stacked([("bce", 0)], data.X, data.Y[:, :-1], h, CONFIG)
    with pytest.raises(ValueError, match=r"network 1 has layer shapes"):
        StackedMLP([build_mlp(4, 3, hidden=5), build_mlp(4, 3, hidden=6)])
    with pytest.raises(ValueError, match=r"different dropout rates \[0.1, 0.5\]"):
        StackedMLP([build_mlp(4, 3, hidden=5, dropout=0.1), build_mlp(4, 3, hidden=5, dropout=0.5)])
    with pytest.raises(ValueError, match="`mlps` is empty"):
        StackedMLP([])
