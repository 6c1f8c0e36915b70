"""Tests for hierloss.cli._training: the training and evaluation loop of `hierloss demo`."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from hierloss.cli._training import (
    DEFAULT_LOSSES,
    LOSSES,
    TrainConfig,
    build_criterion,
    compare_losses,
    evaluate,
    train,
)
from hierloss.datasets import make_hierarchical_classification

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
    assert set(LOSSES) == {"bce", "hbce", "hbce-hard", "mcloss", "hbce-hinge", "conditional"}
    assert DEFAULT_LOSSES == ("bce", "hbce", "hbce-hard", "mcloss")


def test_named_criteria_are_the_documented_losses(data) -> None:  # type: ignore[no-untyped-def]
    """'hbce' is HBCELoss's default (the logit hinge at λ = 0.1); 'hbce-hinge' the probability hinge at λ = 1."""
    from hierloss import HBCELoss

    default, hinge = build_criterion("hbce", data.hierarchy), build_criterion("hbce-hinge", data.hierarchy)
    assert isinstance(default, HBCELoss) and (default.mode, default.scale) == ("logit_hinge", 0.1)
    assert isinstance(hinge, HBCELoss) and (hinge.mode, hinge.scale) == ("hinge", 1.0)




def test_conditional_training_predicts_through_the_chain_rule(data) -> None:  # type: ignore[no-untyped-def]
    """'conditional' trains with ConditionalBCELoss and predicts the chain rule's marginals of the model's logits;
    it is scored once ('chain-rule', no coherent row: it is coherent by construction) with no violation."""
    import torch

    from hierloss import ConditionalBCELoss
    from hierloss.functional import chain_rule_probs

    h = data.hierarchy
    assert isinstance(build_criterion("conditional", h), ConditionalBCELoss)
    trained = train("conditional", data.X[:300], data.Y[:300], h, CONFIG)
    trained.model.eval()
    with torch.no_grad():
        expected = chain_rule_probs(trained.model(torch.as_tensor(data.X[300:], dtype=torch.float32)), h)
    torch.testing.assert_close(trained.predict(data.X[300:]), expected)
    results = compare_losses(data.X[:300], data.Y[:300], data.X[300:], data.Y[300:], h, losses=["bce", "conditional"],
                             config=CONFIG)
    assert [(r.name, r.output) for r in results] == [("BCE", "raw"), ("BCE + coherent", "coherent"),
                                                     ("Conditional (chain rule)", "chain-rule")]
    assert results[-1].violation_05 == 0 and results[-1].violation_any == 0
    assert results[-1].auprc == pytest.approx(evaluate(expected, data.Y[300:], h)["auprc"])
