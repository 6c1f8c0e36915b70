"""Tests for benchmarks/hmc_experiments.py: the HMC benchmark harness (stacked training, C-HMCNN's protocol)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from hierloss.datasets import make_hierarchical_classification
from hmc_experiments import (
    SKIPPED_LABELS,
    TRAININGS,
    StackedMLP,
    TrainConfig,
    build_mlp,
    compare_losses,
    evaluate,
    outputs,
    score,
    train,
    train_stacked,
)

CONFIG = TrainConfig(hidden=32, dropout=0.1, lr=1e-3, batch_size=32, epochs=3, seed=0)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return make_hierarchical_classification(400, 10, depth=3, branching=2, dag=True, random_state=0)


def _max_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                          strict=True))


def test_stacked_training_equals_training_each_network_alone(data) -> None:  # type: ignore[no-untyped-def]
    """Without dropout, the stack trains every (loss, seed) network to the weights `train` gives it alone (same
    initial weights, same batches, its own loss; conditional-ft's second epoch fine-tunes), including a last smaller
    batch (203 = 50 * 4 + 3)."""
    config = TrainConfig(hidden=32, dropout=0.0, lr=1e-3, batch_size=4, epochs=2)
    X, Y = data.X[:203], data.Y[:203]
    runs = [("mcloss", 1), ("bce", 0), ("hbce", 1), ("hbce-hard", 0), ("bce", 1), ("conditional", 0),
            ("conditional", 1), ("conditional-ft", 0), ("conditional-ft", 1)]
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
    with pytest.raises(ValueError, match=r"unknown training 'nope' in run \('nope', 2\); expected one of bce, hbce"):
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


def test_score_leaves_the_gene_ontology_roots_out(data) -> None:  # type: ignore[no-untyped-def]
    """The harness's score leaves C-HMCNN's three Gene Ontology roots out of AU(PRC), as C-HMCNN does."""
    assert SKIPPED_LABELS == ("GO0003674", "GO0005575", "GO0008150")
    config = TrainConfig(hidden=16, dropout=0.0, lr=1e-3, batch_size=32, epochs=1)
    trained = train("bce", data.X[:300], data.Y[:300], data.hierarchy, config)
    results = score(trained, data.X[300:], data.Y[300:], with_coherent=False,
                    skipped_labels=(data.hierarchy.labels[0],))
    everything = score(trained, data.X[300:], data.Y[300:], with_coherent=False, skipped_labels=())
    assert results[0].auprc != everything[0].auprc


def test_every_default_leaves_the_roots_out_alike(data) -> None:  # type: ignore[no-untyped-def]
    """compare_losses, score and evaluate have one default for the labels left out of AU(PRC): the GO roots; on a
    hierarchy whose first label is a GO root, compare_losses and score give the same rows, which differ from
    scoring every label."""
    import inspect

    from hierloss import Hierarchy

    for fn in (compare_losses, score, evaluate):
        assert inspect.signature(fn).parameters["skipped_labels"].default == SKIPPED_LABELS, fn.__name__
    old = data.hierarchy
    rename = {old.labels[0]: SKIPPED_LABELS[0]}
    h = Hierarchy([rename.get(name, name) for name in old.labels],
                  [(rename.get(a, a), rename.get(b, b)) for a, b in old.edges])
    assert h.labels[0] == SKIPPED_LABELS[0]
    config = TrainConfig(hidden=16, dropout=0.0, lr=1e-3, batch_size=32, epochs=1)
    via_compare = compare_losses(data.X[:300], data.Y[:300], data.X[300:], data.Y[300:], h, losses=["bce"],
                                 config=config)
    trained = train("bce", data.X[:300], data.Y[:300], h, config)
    via_score = score(trained, data.X[300:], data.Y[300:])
    assert [r.to_dict() | {"train_s": 0} for r in via_compare] == [r.to_dict() | {"train_s": 0} for r in via_score]
    assert score(trained, data.X[300:], data.Y[300:], skipped_labels=())[0].auprc != via_score[0].auprc


def test_evaluate_matches_sklearn_and_naive_counts(data) -> None:  # type: ignore[no-untyped-def]
    """AU(PRC) and AUROC are sklearn's over the kept labels; the violation rates are the naive counts."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    h = data.hierarchy
    probs = np.random.default_rng(0).random(data.Y.shape).astype(np.float32)
    got = evaluate(probs, data.Y, h, skipped_labels=(h.labels[0],))
    keep = list(range(1, h.num_labels))
    y, p = data.Y[:, keep], probs[:, keep]
    assert got["auprc"] == pytest.approx(average_precision_score(y.ravel(), p.ravel()), abs=1e-6)
    present = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    assert got["auroc"] == pytest.approx(roc_auc_score(y[:, present], p[:, present], average="weighted"), abs=1e-6)
    parents, children = h.edge_index.numpy()
    assert got["violation_05"] == pytest.approx(((probs[:, parents] < 0.5) & (probs[:, children] > 0.5)).any(1).mean())
    assert got["violation_any"] == pytest.approx((probs[:, children] > probs[:, parents]).any(1).mean())


def test_outputs_follow_the_recipes(data) -> None:  # type: ignore[no-untyped-def]
    """A run is scored through its recipe's head and, for a sigmoid head, after `coherent`; conditional training
    through the chain rule, once, with its fine-tuning epochs in the row; 'bce+coherent' is a head, not a training."""
    from hierloss.functional import chain_rule_probs

    assert TRAININGS[:3] == ("bce", "hbce", "hbce-hinge") and "bce+coherent" not in TRAININGS
    assert outputs("bce") == [("raw", "bce"), ("coherent", "bce+coherent")]
    assert outputs("mcloss") == [("max-constraint", "mcloss")]
    assert outputs("conditional-ft") == [("chain-rule", "conditional-ft")]
    with pytest.raises(ValueError, match="'bce\\+coherent' is not a training: train 'bce'"):
        outputs("bce+coherent")
    h = data.hierarchy
    config = TrainConfig(hidden=16, dropout=0.0, lr=1e-3, batch_size=32, epochs=5)
    trained = train("conditional-ft", data.X[:300], data.Y[:300], h, config)
    with torch.no_grad():
        expected = chain_rule_probs(trained.model(torch.as_tensor(data.X[300:], dtype=torch.float32)), h)
    torch.testing.assert_close(trained.predict(data.X[300:]), expected)
    (result,) = score(trained, data.X[300:], data.Y[300:])
    assert (result.name, result.output, result.violation_any) == ("Conditional + fine-tuning (chain rule)",
                                                                  "chain-rule", 0)
    assert result.to_dict()["fine_tune_epochs"] == 1
    assert result.auprc == pytest.approx(evaluate(expected, data.Y[300:], h)["auprc"])
