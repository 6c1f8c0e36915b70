"""Penalty estimation speed: hierloss.edge_weights vs a faithful port of the reference's per-edge pandas filtering.

Also the reference's row-by-row derivation of the CheXpert parent columns vs ``chexpert_targets``.
Run: ``python benchmarks/bench_penalties.py [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds
from hierloss import Hierarchy
from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_hierarchy, chexpert_targets, load_hmc_arff
from hierloss.edge_weights import ConditionalWeight

SHARED_HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"
GO_HEADER = SHARED_HMC / "cellcycle_GO" / "cellcycle_GO.train.arff"


def reference_penalties(df: pd.DataFrame, edges: list[tuple[str, str]], eps: float = 1e-6) -> dict[Any, float]:
    """The reference's estimator: one boolean filter (a copy of the frame) per edge."""
    out = {}
    for parent, child in edges:
        parent_neg = df[df[parent] == 0]
        n_violation = (parent_neg[child] == 1).sum()
        out[(parent, child)] = 1 - (n_violation + eps) / (len(parent_neg) + 2 * eps)
    return out


def reference_targets(df: pd.DataFrame) -> pd.DataFrame:
    """The reference's row-by-row derivation of 'Uncertain' and the parent columns."""
    df = df.copy()
    for col in ("Uncertain", *("Abnormal", "Cardiac", "Opacity", "Fluid Accumulation", "Missing Lung Tissue", "Other")):
        df[col] = 0
    opacity = ["Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Pleural Effusion",
               "Atelectasis", "Pneumothorax", "Pleural Other"]
    for i, row in df.iterrows():
        all_zero = all(row[c] == 0 for c in CHEXPERT_OBSERVATIONS)
        df.at[i, "Uncertain"] = 1 if all_zero else 0
        df.at[i, "Abnormal"] = 0 if (row["No Finding"] == 1 or all_zero) else 1
        df.at[i, "Cardiac"] = int(row["Enlarged Cardiomediastinum"] == 1 or row["Cardiomegaly"] == 1)
        df.at[i, "Opacity"] = int(any(row[c] == 1 for c in opacity))
        df.at[i, "Fluid Accumulation"] = int(any(row[c] == 1 for c in ["Edema", "Consolidation", "Pneumonia",
                                                                        "Pleural Effusion"]))
        df.at[i, "Missing Lung Tissue"] = int(any(row[c] == 1 for c in ["Atelectasis", "Pneumothorax",
                                                                         "Pleural Other"]))
        df.at[i, "Other"] = int(row["Fracture"] == 1 or row["Support Devices"] == 1)
    return df


@functools.cache
def go_hierarchy() -> Hierarchy:
    """The cellcycle_GO DAG, as ``hierloss.datasets.load_hmc_arff`` reads it (the artificial 'root' dropped)."""
    return load_hmc_arff(GO_HEADER).hierarchy


def _labels_for(h: Hierarchy, n: int, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return h.propagate((rng.random((n, h.num_labels)) < rate).astype(np.uint8))


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner (see benchmarks/_timing.py); device/dtype/compile do not apply here."""
    rows: list[dict[str, Any]] = []
    repeat = 3 if quick else 5
    # CheXpert size: float64 columns (how labels with blanks load from CSV) and uint8 columns.
    h = chexpert_hierarchy()
    n = 20_000 if quick else 1_000_000
    est = ConditionalWeight()
    base = _labels_for(h, n, 0.05, 0)
    for dtype_name, goal in (("float64", ">= 10"), ("uint8", "")):
        df = pd.DataFrame(base.astype(dtype_name), columns=list(h.labels))
        ours = median_seconds(lambda df=df: est.fit(h, df), warmup=1, repeat=repeat)
        ref = median_seconds(lambda df=df: reference_penalties(df, list(h.edges)), warmup=1, repeat=repeat)
        got = est.fit(h, df).as_mapping()
        want = reference_penalties(df, list(h.edges))
        assert all(abs(got[e] - want[e]) < 1e-12 for e in h.edges), "hierloss and reference penalties differ"
        case = f"N={n} C=21 E=20 {dtype_name} DataFrame"
        rows += [
            {"group": "penalties", "case": case, "metric": "rows_per_s", "value": n / ours, "goal": "", "note": ""},
            {"group": "penalties", "case": case, "metric": "speedup_vs_reference", "value": ref / ours, "goal": goal,
             "note": f"reference {ref * 1e3:.1f} ms, hierloss {ours * 1e3:.1f} ms"},
        ]
    # GO size: the reference is timed on a sample of edges and scaled to all edges (it is linear in E).
    if GO_HEADER.exists():
        g = go_hierarchy()
        n = 5_000 if quick else 100_000
        y = _labels_for(g, n, 0.002, 1)
        dfg = pd.DataFrame(y.astype(np.float64), columns=list(g.labels))
        ours = median_seconds(lambda: est.fit(g, dfg), warmup=1, repeat=repeat)
        sample = list(g.edges)[:: max(1, g.num_edges // (10 if quick else 40))]
        ref_sample = median_seconds(lambda: reference_penalties(dfg, sample), warmup=0, repeat=1 if quick else 3)
        ref = ref_sample * g.num_edges / len(sample)
        case = f"N={n} C={g.num_labels} E={g.num_edges} float64 DataFrame"
        rows += [
            {"group": "penalties", "case": case, "metric": "rows_per_s", "value": n / ours, "goal": "", "note": ""},
            {"group": "penalties", "case": case, "metric": "speedup_vs_reference", "value": ref / ours,
             "goal": ">= 100", "note": f"reference {ref:.1f} s (timed on {len(sample)} edges, scaled), "
                                       f"hierloss {ours:.3f} s"},
        ]
    # Target derivation.
    n = 2_000 if quick else 20_000
    obs = pd.DataFrame(np.random.default_rng(2).integers(0, 2, (n, 14)) * (np.random.default_rng(3).random((n, 14))
                       < 0.3), columns=list(CHEXPERT_OBSERVATIONS))
    ours = median_seconds(lambda: chexpert_targets(obs), warmup=1, repeat=repeat)
    ref = median_seconds(lambda: reference_targets(obs), warmup=0, repeat=1)
    rows.append({"group": "penalties", "case": f"chexpert_targets N={n}", "metric": "speedup_vs_reference",
                 "value": ref / ours, "goal": ">= 1000",
                 "note": f"reference {ref:.2f} s, hierloss {ours * 1e3:.2f} ms"})
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table."""
    lines = ["| group | case | metric | value | goal | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['case']} | {r['metric']} | {r['value']:.4g} | {r['goal']} | {r['note']} |"
              for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    print(to_markdown(run(quick=args.quick, device=args.device)))
    print(f"\n({time.perf_counter() - start:.0f} s)")
