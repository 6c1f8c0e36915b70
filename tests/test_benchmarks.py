"""Smoke and correctness tests for the benchmark suite in benchmarks/ (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_hierarchy
import bench_losses
import hierloss
import run as suite
from _dense import dense_constr_out, dense_mcloss, descendant_matrix
from _hierarchies import synthetic_dag
from hierloss import Hierarchy
from hierloss.metrics import coherent

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DIAMOND = Hierarchy.from_edges([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("a", "f")])


def test_synthetic_dag_has_the_requested_size_and_depth() -> None:
    """The generator returns exactly C labels, E edges, the given roots, and longest path = depth."""
    h = synthetic_dag(300, 420, depth=7, roots=3, seed=1)
    assert (h.num_labels, h.num_edges, len(h.roots), max(h.depths)) == (300, 420, 3, 7)


def test_synthetic_dag_with_few_edges_leaves_extra_roots() -> None:
    """With fewer edges than non-root labels, the labels left without a parent become roots."""
    h = synthetic_dag(100, 40, depth=5, roots=2, seed=0)
    assert (h.num_edges, len(h.roots)) == (40, 60)


def test_synthetic_dag_rejects_impossible_sizes() -> None:
    """More edges than a layered DAG can hold, or a bad root count, raise ValueError naming the bound."""
    with pytest.raises(ValueError, match=r"num_edges must be in \[0, 3\]"):
        synthetic_dag(3, 4, depth=2, roots=1)
    with pytest.raises(ValueError, match=r"roots must be in \[1, num_labels=3\], got 0"):
        synthetic_dag(3, 1, roots=0)


def test_random_dag_edges_has_the_requested_size_and_depth() -> None:
    """bench_hierarchy's generator gives exactly C labels and E distinct edges, 3 roots and longest path = depth."""
    names, edges = bench_hierarchy.random_dag_edges(500, 1000, depth=6, seed=2)
    h = Hierarchy(names, edges)
    assert (h.num_labels, h.num_edges, len(h.roots), max(h.depths)) == (500, 1000, 3, 6)
    assert len(set(edges)) == 1000


def test_hierarchy_group_reports_every_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'hierarchy' group (at a tiny size) reports time and peak memory of every operation on both shapes."""
    monkeypatch.setattr(bench_hierarchy, "CASES_QUICK", (("random DAG", 60, 120), ("star", 60, 59)))
    rows = suite.RUNNERS["hierarchy"](True, "cpu", "fp32", False)
    operations = ["build", "propagate (first)", "propagate (again)", "ancestors (deepest label)",
                  "descendants (a root)", "ancestor_matrix(sparse=True)", "HBCELoss(h)", "HBCELoss step",
                  "BCEWithLogitsLoss step"]
    for case in ("random DAG C=60 E=120", "star C=60 E=59"):
        assert [r["case"] for r in rows if r["metric"] == "seconds" and r["case"].startswith(case)] == [
            f"{case} {op}" for op in operations]
    assert all(r["group"] == "hierarchy" and r["value"] >= 0 for r in rows)


def test_dense_constr_out_equals_coherent_max() -> None:
    """C-HMCNN's dense (N, C, C) max-constraint equals hierloss's level-wise coherent('max') on a DAG."""
    probs = torch.rand(7, DIAMOND.num_labels, generator=torch.Generator().manual_seed(0))
    r = descendant_matrix(DIAMOND)
    torch.testing.assert_close(dense_constr_out(probs, r), coherent(probs, DIAMOND), rtol=0, atol=0)


def test_descendant_matrix_marks_self_and_descendants() -> None:
    """R[i, j] is 1 exactly when j is i or one of i's descendants (C-HMCNN's convention)."""
    r = descendant_matrix(DIAMOND)
    names = DIAMOND.labels
    for i, a in enumerate(names):
        want = {a, *DIAMOND.descendants(a)}
        assert {names[j] for j in torch.nonzero(r[i]).flatten().tolist()} == want


def test_dense_mcloss_equals_hierloss_mcloss() -> None:
    """The dense reference the benchmark compares against computes the same loss and gradient as MCLoss."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(9, DIAMOND.num_labels, generator=gen, dtype=torch.float64, requires_grad=True)
    target = DIAMOND.propagate((torch.rand(9, DIAMOND.num_labels, generator=gen) < 0.3).double())
    ours = hierloss.MCLoss(DIAMOND)(logits, target)
    (g_ours,) = torch.autograd.grad(ours, logits)
    dense = dense_mcloss(logits, target, descendant_matrix(DIAMOND, torch.float64))
    (g_dense,) = torch.autograd.grad(dense, logits)
    torch.testing.assert_close(ours, dense)
    torch.testing.assert_close(g_ours, g_dense)


def test_every_listed_loss_builds_and_trains_one_step() -> None:
    """Each loss of bench_losses.LOSSES builds from hierloss and gives logits a finite gradient."""
    h = synthetic_dag(30, 40, depth=4, roots=2)
    x, y = bench_losses.inputs(h, 5, "cpu", "fp32")
    for name in bench_losses.LOSSES:
        bench_losses.make_step(bench_losses.loss_fn(name, h), x, y)()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name


def test_timed_losses_are_the_recipes_criteria_plus_two_layers() -> None:
    """bench_losses.LOSSES times each training criterion of hierloss.recipes (every class any recipe stage trains
    with, once) and, as separate cases, BCE through MaxConstraint and LabelGraphRefinement."""
    h = synthetic_dag(30, 40, depth=4, roots=2)
    timed = {name: type(bench_losses.LOSSES[name][1](h)[0]) for name in bench_losses.LOSSES}
    trained = {type(stage) for name in hierloss.recipes.names() for stage in hierloss.recipes.get(name, h).stages}
    assert set(timed.values()) - {type(lambda: None)} == trained  # the two layer cases are closures
    assert [name for name, kind in timed.items() if kind is type(lambda: None)] == ["MaxConstraint",
                                                                                  "LabelGraphRefinement"]
    assert timed["HierarchyPenalty"] is hierloss.recipes.PenalisedLoss and timed["HBCELoss"] is hierloss.HBCELoss
    assert "recipe 'conditional-ft', stage 1" in bench_losses.LOSSES["ChainRuleBCELoss"][0]


def test_profile_attributes_the_walk_and_restores_the_engine() -> None:
    """profile_propagation splits one operation's self time into shares that sum to 1, the walk among them, and
    leaves the engine's functions unpatched afterwards."""
    import hierloss.propagation._kernels as K
    import profile_propagation

    before = K.walk_with_arg
    h = synthetic_dag(30, 40, depth=4, roots=2)
    x, y = bench_losses.inputs(h, 8, "cpu", "fp32")
    shares = profile_propagation.profile_shares(lambda z: hierloss.MCLoss(h)(z, y.detach()), x, steps=2)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["walk_with_arg"] > 0 and shares["constrained_forward"] > 0
    assert K.walk_with_arg is before


def test_missing_loss_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed loss that hierloss does not export raises MissingLossError naming it."""
    monkeypatch.setitem(bench_losses.LOSSES, "NoSuchLoss", ("", lambda h: (bench_losses._cls("NoSuchLoss")(), [])))
    with pytest.raises(bench_losses.MissingLossError, match="hierloss has no 'NoSuchLoss'"):
        bench_losses.loss_fn("NoSuchLoss", DIAMOND)


def test_median_seconds_interleaved_times_every_function() -> None:
    """Every function gets a median, and min_time makes a sample span at least that long per call batch."""
    calls = {"fast": 0, "slow": 0}

    def fast() -> None:
        calls["fast"] += 1

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.002)

    times = bench_losses.median_seconds_interleaved({"fast": fast, "slow": slow}, warmup=1, repeat=3, min_time=0.001)
    assert set(times) == {"fast", "slow"} and times["slow"] >= 0.002 > times["fast"]
    assert calls["slow"] >= 4 and calls["fast"] > calls["slow"]


def test_peak_rss_increase_sees_a_known_allocation() -> None:
    """A step that fills a 64 MiB tensor raises the measured RSS peak by 64 MiB (within allocator slack).

    Measured in a fresh interpreter, as the benchmark does: in a long-lived test worker, pages freed or touched by
    earlier tests and other threads move the process's resident set while the step runs."""
    pytest.importorskip("resource")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs")
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import bench_memory; "
            "print(bench_memory.peak_rss_increase(lambda: torch.ones(16 * 2**20).sum()))")
    proc = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True,
                          timeout=120, check=True)
    peak = int(proc.stdout.split()[-1])
    assert 63 * 2**20 <= peak <= 72 * 2**20


@pytest.mark.parametrize(("value", "goal", "met"), [(1.9, "<= 2.0", True), (2.1, "<= 2.0", False),
                                                    (10.0, ">= 10", True), (9.9, ">= 10", False), (5.0, "", None)])
def test_goal_met(value: float, goal: str, met: bool | None) -> None:
    """Goals written '<= x' / '>= x' are checked inclusively; an empty goal gives None."""
    assert suite.goal_met(value, goal) is met


def test_goal_met_rejects_other_forms() -> None:
    """A goal in any other form raises ValueError quoting it."""
    with pytest.raises(ValueError, match=r"got '< 2'"):
        suite.goal_met(1.0, "< 2")


def test_quick_suite_writes_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """run.py --quick (losses and scaling groups) exits 0, prints the tables, and writes JSON rows and plots."""
    out = tmp_path / "bench.json"
    assert suite.main(["--quick", "--only", "losses,scaling", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Goals" in printed and "| MCLoss |" in printed
    data = json.loads(out.read_text())
    assert {r["loss"] for r in data["rows"] if r["group"] == "losses"} == set(bench_losses.LOSSES)
    assert data["errors"] == [] and data["meta"]["torch"] == torch.__version__
    assert (tmp_path / "scaling_n.png").stat().st_size > 0 and (tmp_path / "scaling_e.png").stat().st_size > 0


def test_failing_group_makes_the_suite_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A group that raises is reported on stderr and in the JSON, and main returns 1."""
    def broken(*args: object) -> list[dict[str, object]]:
        raise bench_losses.MissingLossError("hierloss has no 'X'")

    monkeypatch.setitem(suite.RUNNERS, "losses", broken)
    out = tmp_path / "bench.json"
    assert suite.main(["--quick", "--only", "losses", "--out", str(out)]) == 1
    assert "FAILED losses: MissingLossError: hierloss has no 'X'" in capsys.readouterr().err
    assert json.loads(out.read_text())["errors"][0]["group"] == "losses"


def test_unknown_group_is_rejected() -> None:
    """--only with a group that does not exist exits with argparse's usage error."""
    with pytest.raises(SystemExit):
        suite.main(["--quick", "--only", "nope"])


def test_gpu_checks_script_names_its_stages_and_needs_cuda(tmp_path: Path) -> None:
    """scripts/gpu_checks.sh refuses an unknown stage listing the known ones, and (without a GPU) stops before any
    stage with 'no CUDA device' instead of running on the CPU."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_checks.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    bad = subprocess.run(["bash", str(script), "nope", str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "expected tests, bench, probe, quality or conditional" in bad.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the stages would run")
    run = subprocess.run(["bash", str(script), "conditional", str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "no CUDA device" in run.stderr
    assert not (tmp_path / "hmc_quality.jsonl").exists()


def test_train_time_summary_takes_medians_of_the_scored_outputs() -> None:
    """hmc_train_time's summary: each recipe's median train_s over the rounds of its scored output only (BCE's
    'coherent' rows are not counted), the ratio to BCE's median, and the distinct AU(PRC) values."""
    import hmc_train_time

    def row(loss: str, output: str, train_s: float, auprc: float) -> dict[str, object]:
        return {"loss": loss, "output": output, "train_s": train_s, "auprc": auprc}

    rows = [row("bce", "raw", t, 0.3) for t in (10.0, 14.0, 12.0)] + [row("bce", "coherent", 99.0, 0.31)]
    rows += [row("mcloss", "max-constraint", t, 0.32) for t in (13.0, 18.0, 15.0)]
    got = {s["recipe"]: s for s in hmc_train_time.summary(rows)}
    assert set(got) == {"bce", "mcloss"}
    assert got["bce"]["median_train_s"] == 12.0 and got["bce"]["auprc"] == [0.3]
    assert got["mcloss"]["median_train_s"] == 15.0 and got["mcloss"]["ratio_to_bce"] == 15.0 / 12.0
