"""What a custom CPU kernel would buy the propagation engine: a C++ prototype measured beside the engine.

The engine (:mod:`hierloss.propagation`) is made of PyTorch operations: every group of a level costs a gather, a
reduction, the arg's bookkeeping and a row write, each a pass over memory and a dispatch. A kernel can walk the
labels one by one and update a label's row from its neighbours' rows in a single loop over the samples. This file
compiles such kernels with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler and ``ninja``; nothing
of it is shipped with hierloss): the max over descendants with its arg (MaxConstraint + BCE, MCLoss) and the chain
rule with its parent and weight (ChainRuleBCELoss), forward and backward. They run in the engine's own layout
(labels-major rows, the same transpositions around them), so the comparison isolates the walk. Each is checked
against the engine (values and gradients), then both are timed against ``BCEWithLogitsLoss`` forward + backward,
round-robin in one run on one thread.

Run: ``python benchmarks/kernel_prototype.py [--out results.json]`` (about a minute to compile the first time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hierarchies import benchmark_hierarchy
from _timing import machine, median_seconds_interleaved
from hierloss import ChainRuleBCELoss, MaxConstraint, MCLoss

CPP = r"""
#include <torch/extension.h>
#include <cmath>

// Labels-major walks: row r of a (C, M) tensor holds label r for the M samples; the inner loops run over samples.

// max over self and descendants, in place on xt (C, M) float, with the arg (C, M) int32 (smallest index wins ties);
// `order`: labels with children, children first; CSR of each label's children.
torch::Tensor closure_max(torch::Tensor xt, torch::Tensor order, torch::Tensor rowptr, torch::Tensor cols) {
  const int64_t c = xt.size(0), m = xt.size(1);
  auto arg = torch::arange(c, torch::kInt).unsqueeze(1).expand({c, m}).contiguous();
  float* x = xt.data_ptr<float>();
  int32_t* a = arg.data_ptr<int32_t>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int64_t* cl = cols.data_ptr<int64_t>();
  for (int64_t i = 0; i < order.numel(); ++i) {
    const int64_t p = ord[i];
    float* xp = x + p * m;
    int32_t* ap = a + p * m;
    for (int64_t e = rp[p]; e < rp[p + 1]; ++e) {
      const float* xc = x + cl[e] * m;
      const int32_t* ac = a + cl[e] * m;
      for (int64_t s = 0; s < m; ++s) {
        const bool take = xc[s] > xp[s] || (xc[s] == xp[s] && ac[s] < ap[s]);
        xp[s] = take ? xc[s] : xp[s];
        ap[s] = take ? ac[s] : ap[s];
      }
    }
  }
  return arg;
}

// chain rule forward, in place: lp = logsigmoid(z), lq = logsigmoid(-z) on entry (C, M); `order`: labels with
// parents, parents first; CSR of each label's parents. Returns the parent (C, M) int32 and w (C, M).
std::vector<torch::Tensor> chain_forward(torch::Tensor lp_t, torch::Tensor lq_t, torch::Tensor order,
                                         torch::Tensor rowptr, torch::Tensor cols) {
  const int64_t c = lp_t.size(0), m = lp_t.size(1);
  auto par = torch::arange(c, torch::kInt).unsqueeze(1).expand({c, m}).contiguous();
  auto w_t = torch::zeros_like(lp_t);
  float* lp = lp_t.data_ptr<float>();
  float* lq = lq_t.data_ptr<float>();
  float* w = w_t.data_ptr<float>();
  int32_t* pa = par.data_ptr<int32_t>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int64_t* cl = cols.data_ptr<int64_t>();
  std::vector<float> low(m);
  std::vector<int32_t> pick(m);
  for (int64_t i = 0; i < order.numel(); ++i) {
    const int64_t ch = ord[i];
    for (int64_t s = 0; s < m; ++s) { low[s] = INFINITY; pick[s] = (int32_t)cl[rp[ch]]; }
    for (int64_t e = rp[ch]; e < rp[ch + 1]; ++e) {  // parents in index order: a tie keeps the first
      const float* lpp = lp + cl[e] * m;
      const int32_t idx = (int32_t)cl[e];
      for (int64_t s = 0; s < m; ++s) {
        const bool take = lpp[s] < low[s];
        low[s] = take ? lpp[s] : low[s];
        pick[s] = take ? idx : pick[s];
      }
    }
    float* lpc = lp + ch * m;
    float* lqc = lq + ch * m;
    float* wc = w + ch * m;
    int32_t* pc = pa + ch * m;
    for (int64_t s = 0; s < m; ++s) {
      const float b = lpc[s];
      const float second = b + lq[(int64_t)pick[s] * m + s];
      const float a = lqc[s];
      const float hi = a > second ? a : second;
      const float q = hi + std::log1p(std::exp(-std::fabs(a - second)));
      lpc[s] = b + low[s];
      lqc[s] = q;
      wc[s] = std::exp(second - q);
      pc[s] = pick[s];
    }
  }
  return {par, w_t};
}

// its backward, in place on gp, gq (C, M): children first, each label passes gp and gq·w on to its parent; returns
// the gradient with respect to z (C, M), with s = sigmoid(z).
torch::Tensor chain_backward(torch::Tensor gp_t, torch::Tensor gq_t, torch::Tensor s_t, torch::Tensor par,
                             torch::Tensor w_t, torch::Tensor order) {
  const int64_t m = gp_t.size(1);
  float* gp = gp_t.data_ptr<float>();
  float* gq = gq_t.data_ptr<float>();
  const float* w = w_t.data_ptr<float>();
  const float* sg = s_t.data_ptr<float>();
  const int32_t* pa = par.data_ptr<int32_t>();
  const int64_t* ord = order.data_ptr<int64_t>();
  auto grad = torch::empty_like(gp_t);
  float* g = grad.data_ptr<float>();
  auto carried = torch::zeros_like(gp_t);
  float* cq = carried.data_ptr<float>();
  for (int64_t i = order.numel() - 1; i >= 0; --i) {
    const int64_t ch = ord[i];
    const int64_t o = ch * m;
    for (int64_t s = 0; s < m; ++s) {
      const int64_t p = (int64_t)pa[o + s] * m + s;
      const float qw = gq[o + s] * w[o + s];
      cq[o + s] = qw;
      gp[p] += gp[o + s];
      gq[p] += qw;
    }
  }
  for (int64_t r = 0; r < gp_t.numel(); ++r) g[r] = gp[r] - sg[r] * (gp[r] + gq[r]) + cq[r];
  return grad;
}
"""


def _csr(owner: Tensor, read: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(owner * num_labels + read)
    counts = torch.bincount(owner, minlength=num_labels)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), read[order].contiguous()


def build(verbose: bool = False) -> Any:
    from torch.utils.cpp_extension import load_inline

    return load_inline("hierloss_kernel_prototype_lm", cpp_sources=CPP,
                       functions=["closure_max", "chain_forward", "chain_backward"],
                       extra_cflags=["-O3", "-march=native", "-ffast-math"], verbose=verbose)


def run(h_name: str = "go", n: int = 256, repeat: int = 15) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    ext = build()
    h, label = benchmark_hierarchy(h_name)
    c = h.num_labels
    parents, children = h.edge_index
    up_order = torch.tensor(sorted((i for i in range(c) if h.heights[i] > 0), key=lambda i: h.heights[i]))
    down_order = torch.tensor(sorted((i for i in range(c) if h.depths[i] > 0), key=lambda i: h.depths[i]))
    up_ptr, up_cols = _csr(parents, children, c)
    down_ptr, down_cols = _csr(children, parents, c)

    class KMax(torch.autograd.Function):
        """The engine's closure max with the walk in C++ (same transpositions, same int64 arg for the scatter)."""

        @staticmethod
        def forward(ctx: Any, x: Tensor) -> Tensor:
            xt = x.t().clone(memory_format=torch.contiguous_format)
            arg = ext.closure_max(xt, up_order, up_ptr, up_cols)
            arg_rows = arg.t().contiguous().long()
            ctx.save_for_backward(arg_rows)
            return xt.t().contiguous()

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> Tensor:
            (arg,) = ctx.saved_tensors
            return torch.zeros_like(g).scatter_add_(1, arg, g)

    class KConstrained(torch.autograd.Function):
        """C-HMCNN's constrained logits, both maxima in one C++ walk over (C, 2N)."""

        @staticmethod
        def forward(ctx: Any, z: Tensor, positive: Tensor) -> Tensor:
            n_ = z.shape[0]
            pos_t = positive.t().contiguous()
            xt = torch.empty(c, 2 * n_)
            xt[:, :n_].copy_(z.t())
            xt[:, n_:].copy_(z.t())
            xt[:, n_:].masked_fill_(~pos_t, float("-inf"))
            arg = ext.closure_max(xt, up_order, up_ptr, up_cols)
            logits = torch.where(pos_t, xt[:, n_:], xt[:, :n_]).t().contiguous()
            ctx.save_for_backward(torch.where(pos_t, arg[:, n_:], arg[:, :n_]).t().contiguous().long())
            return logits

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
            (arg,) = ctx.saved_tensors
            return torch.zeros_like(g).scatter_add_(1, arg, g), None

    class KChainBCE(torch.autograd.Function):
        """The element-wise chain-rule BCE with the walks in C++ (targets as the engine takes them)."""

        @staticmethod
        def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
            zt = z.t().contiguous()
            lp, lq = F.logsigmoid(zt), F.logsigmoid(-zt)
            par, w = ext.chain_forward(lp, lq, down_order, down_ptr, down_cols)
            loss_t = torch.addcmul(lq, y.t(), lp - lq).neg_()
            ctx.save_for_backward(zt, y, par, w)
            return loss_t.t().contiguous()

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
            zt, y, par, w = ctx.saved_tensors
            gt, yt = g.t(), y.t()
            yg = torch.mul(yt, gt, out=torch.empty(zt.shape))
            gq = torch.sub(yg, gt, out=torch.empty(zt.shape))
            grad = ext.chain_backward(yg.neg_(), gq, torch.sigmoid(zt), par, w, down_order)
            return grad.t(), None

    torch.manual_seed(0)
    x = torch.randn(n, c)
    y = h.propagate((torch.rand(n, c) < 0.05).float())
    pos = y > 0.5
    mcm, mcl = MaxConstraint(h), MCLoss(h, validate_args=False)
    crb = ChainRuleBCELoss(h, validate_args=False)
    cases = {
        "BCEWithLogitsLoss": lambda v: F.binary_cross_entropy_with_logits(v, y),
        "MaxConstraint + BCE (engine)": lambda v: F.binary_cross_entropy_with_logits(mcm(v), y),
        "MaxConstraint + BCE (C++ walk)": lambda v: F.binary_cross_entropy_with_logits(KMax.apply(v), y),
        "MCLoss (engine)": lambda v: mcl(v, y),
        "MCLoss (C++ walk)": lambda v: F.binary_cross_entropy_with_logits(KConstrained.apply(v, pos), y),
        "ChainRuleBCELoss (engine)": lambda v: crb(v, y),
        "ChainRuleBCELoss (C++ walk)": lambda v: KChainBCE.apply(v, y).mean(),
    }
    # the prototype must give the engine's values and gradients
    for engine, kernel in (("MaxConstraint + BCE (engine)", "MaxConstraint + BCE (C++ walk)"),
                           ("MCLoss (engine)", "MCLoss (C++ walk)"),
                           ("ChainRuleBCELoss (engine)", "ChainRuleBCELoss (C++ walk)")):
        va, vb = x.clone().requires_grad_(), x.clone().requires_grad_()
        la, lb = cases[engine](va), cases[kernel](vb)
        la.backward()
        lb.backward()
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vb.grad, va.grad, rtol=1e-4, atol=1e-7)

    def step(fn: Any) -> Any:
        def go() -> None:
            v = x.clone().requires_grad_()
            fn(v).backward()
        return go

    times = median_seconds_interleaved({k: step(f) for k, f in cases.items()}, device="cpu", warmup=2,
                                       repeat=repeat, min_time=0.02)
    base = times["BCEWithLogitsLoss"]
    return [{"group": "kernel_prototype", "case": f"{label} C={c} E={h.num_edges} N={n} fp32 eager", "loss": k,
             "metric": "x_bce", "value": v / base, "ms": v * 1e3} for k, v in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    meta = machine("cpu", 1)
    rows = run(n=args.n)
    print("| operation | ms | × BCE |\n|---|---|---|")
    for r in rows:
        print(f"| {r['loss']} | {r['ms']:.2f} | {r['value']:.2f} |")
    if args.out:
        import os

        meta["load_average_end"] = os.getloadavg()
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
