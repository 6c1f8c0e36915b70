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
    bad = data.Y.astype(np.float32)
    bad[3, 2] = 2.0
    with pytest.raises(ValueError, match=rf"column 2 \({data.hierarchy.labels[2]!r}\) holds 2\.0"):
        train("bce", data.X, bad, data.hierarchy, CONFIG)
    assert set(LOSSES) == {"bce", "hbce", "hbce-hard", "mcloss", "hbce-hinge", "conditional", "conditional-ft"}
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


@pytest.mark.parametrize(("epochs", "expected"), [(1, 0), (2, 1), (5, 1), (10, 2), (67, 13), (106, 21), (123, 25)])
def test_fine_tune_epochs_is_the_last_fifth(epochs: int, expected: int) -> None:
    """conditional-ft fine-tunes round(epochs / 5) epochs, at least one, after at least one conditional epoch."""
    from hierloss.cli._losses import fine_tune_epochs

    assert fine_tune_epochs(epochs) == expected


def test_conditional_then_marginal_switches_stage_alike_with_or_without_branches(data) -> None:  # type: ignore[no-untyped-def]
    """The two-stage criterion is ConditionalBCELoss, then after fine_tune() ChainRuleBCELoss; its branch-free form
    (for CUDA graphs) gives the same values and gradients in both stages."""
    import torch

    from hierloss import ChainRuleBCELoss, ConditionalBCELoss
    from hierloss.cli._training import ConditionalThenMarginal

    h = data.hierarchy
    x = torch.randn(16, h.num_labels, requires_grad=True)
    y = torch.as_tensor(data.Y[:16], dtype=torch.float32)
    branched, branch_free = ConditionalThenMarginal(h), ConditionalThenMarginal(h, branch_free=True)
    for stage, want in ((False, ConditionalBCELoss(h)), (True, ChainRuleBCELoss(h))):
        expected = want(x, y)
        (g_want,) = torch.autograd.grad(expected, x)
        for crit in (branched, branch_free):
            crit.fine_tune(stage)
            got = crit(x, y)
            (g_got,) = torch.autograd.grad(got, x)
            torch.testing.assert_close(got, expected)
            torch.testing.assert_close(g_got, g_want)


def test_conditional_ft_trains_two_stages_and_predicts_through_the_chain_rule(data) -> None:  # type: ignore[no-untyped-def]
    """'conditional-ft' gives the weights of a plain loop that trains with ConditionalBCELoss, then with
    ChainRuleBCELoss for the last fine_tune_epochs epochs (same seed, batches and optimiser); it is scored once on
    the chain rule's marginals, with the number of fine-tuning epochs in the row."""
    import dataclasses

    import torch

    from hierloss import ChainRuleBCELoss, ConditionalBCELoss
    from hierloss.cli._training import ConditionalThenMarginal, build_mlp
    from hierloss.functional import chain_rule_probs

    h = data.hierarchy
    config = dataclasses.replace(CONFIG, dropout=0.0, epochs=5)
    assert isinstance(build_criterion("conditional-ft", h), ConditionalThenMarginal)
    X = torch.as_tensor(data.X[:300], dtype=torch.float32)
    Y = torch.as_tensor(data.Y[:300], dtype=torch.float32)
    torch.manual_seed(config.seed)
    model = build_mlp(X.shape[1], h.num_labels, config.hidden, config.num_layers, config.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        criterion = ConditionalBCELoss(h) if epoch < 4 else ChainRuleBCELoss(h)  # 5 epochs: the last one fine-tunes
        for idx in torch.split(torch.randperm(300, generator=order), config.batch_size):
            optimizer.zero_grad()
            criterion(model(X[idx]), Y[idx]).backward()
            optimizer.step()
    trained = train("conditional-ft", data.X[:300], data.Y[:300], h, config)
    for got, want in zip(trained.model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    plain = train("conditional", data.X[:300], data.Y[:300], h, config)
    gap = max((a - b).abs().max().item() for a, b in zip(plain.model.state_dict().values(),
                                                         trained.model.state_dict().values(), strict=True))
    assert gap > 1e-4  # the fine-tuning epoch changed the model
    model.eval()
    with torch.no_grad():
        expected = chain_rule_probs(model(torch.as_tensor(data.X[300:], dtype=torch.float32)), h)
    torch.testing.assert_close(trained.predict(data.X[300:]), expected, rtol=1e-4, atol=1e-5)
    results = compare_losses(data.X[:300], data.Y[:300], data.X[300:], data.Y[300:], h, losses=["conditional-ft"],
                             config=config)
    assert [(r.name, r.output) for r in results] == [("Conditional + fine-tuning (chain rule)", "chain-rule")]
    assert results[0].violation_any == 0 and results[0].to_dict()["fine_tune_epochs"] == 1
