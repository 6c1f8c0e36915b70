"""What a custom CPU kernel would buy the propagation engine: a C++ prototype measured beside the engine.

The engine (:mod:`hierloss.propagation`) is made of PyTorch operations: every group of a level costs a gather, a
reduction and a row write, each a pass over memory. A kernel can instead walk one sample's labels in order while
they sit in the cache. This file compiles such a kernel with ``torch.utils.cpp_extension.load_inline`` (needs a
C++ compiler and ``ninja``; nothing of it is shipped with hierloss) for the max over descendants (MaxConstraint +
BCE, MCLoss) and the chain rule (ChainRuleBCELoss), checks that it gives the engine's values and gradients, and
times both against ``BCEWithLogitsLoss`` forward + backward, alternately, in one run on one thread.

Run: ``python benchmarks/kernel_prototype.py [--out results.json]`` (about a minute to compile the first time).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hierarchies import benchmark_hierarchy
from _timing import median_seconds_interleaved
from hierloss import ChainRuleBCELoss, MaxConstraint, MCLoss

CPP = r"""
#include <torch/extension.h>
#include <cmath>

// max over self and descendants: one sample at a time, labels in `order` (children before parents), CSR children.
std::vector<torch::Tensor> closure_max(torch::Tensor x, torch::Tensor order, torch::Tensor rowptr,
                                       torch::Tensor cols) {
  auto out = x.contiguous().clone();
  const int64_t n = out.size(0), c = out.size(1);
  auto arg = torch::arange(c, torch::kLong).repeat({n, 1});
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int64_t* cl = cols.data_ptr<int64_t>();
  const int64_t m = order.numel();
  float* o_all = out.data_ptr<float>();
  int64_t* a_all = arg.data_ptr<int64_t>();
  for (int64_t s = 0; s < n; ++s) {
    float* o = o_all + s * c;
    int64_t* a = a_all + s * c;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t p = ord[i];
      float best = o[p];
      int64_t bi = p;
      for (int64_t e = rp[p]; e < rp[p + 1]; ++e) {
        const int64_t ch = cl[e];
        const float v = o[ch];
        if (v > best || (v == best && a[ch] < bi)) { best = v; bi = a[ch]; }
      }
      o[p] = best;
      a[p] = bi;
    }
  }
  return {out, arg};
}

// chain rule in log space: labels in `order` (parents before children), CSR parents; returns log P, log(1-P), parent
std::vector<torch::Tensor> chain_forward(torch::Tensor z, torch::Tensor order, torch::Tensor rowptr,
                                         torch::Tensor cols) {
  auto zc = z.contiguous();
  const int64_t n = zc.size(0), c = zc.size(1);
  auto lp = torch::log_sigmoid(zc);
  auto lq = torch::log_sigmoid(-zc);
  auto par = torch::arange(c, torch::kLong).repeat({n, 1});
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int64_t* cl = cols.data_ptr<int64_t>();
  const int64_t m = order.numel();
  for (int64_t s = 0; s < n; ++s) {
    float* p = lp.data_ptr<float>() + s * c;
    float* q = lq.data_ptr<float>() + s * c;
    int64_t* pa = par.data_ptr<int64_t>() + s * c;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t ch = ord[i];
      float low = INFINITY; int64_t li = -1;
      for (int64_t e = rp[ch]; e < rp[ch + 1]; ++e) {
        const int64_t pp = cl[e];
        if (p[pp] < low || li < 0) { low = p[pp]; li = pp; }
      }
      const float b = p[ch], a = q[ch];
      const float t = b + q[li];
      p[ch] = b + low;
      q[ch] = std::max(a, t) + std::log1p(std::exp(-std::fabs(a - t)));
      pa[ch] = li;
    }
  }
  return {lp, lq, par};
}

// its backward: one walk back per sample, children before parents
torch::Tensor chain_backward(torch::Tensor z, torch::Tensor lq, torch::Tensor par, torch::Tensor order,
                             torch::Tensor gp_in, torch::Tensor gq_in) {
  auto gp = gp_in.contiguous().clone();
  auto gq = gq_in.contiguous().clone();
  auto zc = z.contiguous();
  const int64_t n = zc.size(0), c = zc.size(1);
  auto grad = torch::empty_like(zc);
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t m = order.numel();
  for (int64_t s = 0; s < n; ++s) {
    const float* zz = zc.data_ptr<float>() + s * c;
    const float* q = lq.data_ptr<float>() + s * c;
    const int64_t* pa = par.data_ptr<int64_t>() + s * c;
    float* g_p = gp.data_ptr<float>() + s * c;
    float* g_q = gq.data_ptr<float>() + s * c;
    float* g = grad.data_ptr<float>() + s * c;
    for (int64_t j = 0; j < c; ++j) g[j] = 0.f;
    for (int64_t i = m - 1; i >= 0; --i) {
      const int64_t ch = ord[i];
      const int64_t pp = pa[ch];
      const float sg = 1.f / (1.f + std::exp(-zz[ch]));
      const float b = std::log(sg);
      const float w = std::exp(b + q[pp] - q[ch]);
      g_p[pp] += g_p[ch];
      g_q[pp] += g_q[ch] * w;
      g[ch] = g_p[ch] * (1.f - sg) + g_q[ch] * (w - sg);
      g_p[ch] = 0.f; g_q[ch] = 0.f;  // done: roots are handled below
    }
    for (int64_t j = 0; j < c; ++j) {
      if (g_p[j] != 0.f || g_q[j] != 0.f) {
        const float sg = 1.f / (1.f + std::exp(-zz[j]));
        g[j] = g_p[j] * (1.f - sg) - g_q[j] * sg;
      }
    }
  }
  return grad;
}
"""


def _csr(owner: Tensor, read: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(owner * num_labels + read)
    counts = torch.bincount(owner, minlength=num_labels)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), read[order].contiguous()


def build(verbose: bool = False) -> Any:
    from torch.utils.cpp_extension import load_inline

    return load_inline("hierloss_kernel_prototype", cpp_sources=CPP, functions=["closure_max", "chain_forward",
                       "chain_backward"], extra_cflags=["-O3", "-march=native"], verbose=verbose)


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
        @staticmethod
        def forward(ctx: Any, x: Tensor) -> Tensor:
            out, arg = ext.closure_max(x, up_order, up_ptr, up_cols)
            ctx.save_for_backward(arg)
            return out

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> Tensor:
            (arg,) = ctx.saved_tensors
            return torch.zeros_like(g).scatter_add_(1, arg, g)

    class KChain(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z: Tensor) -> tuple[Tensor, Tensor]:
            lp, lq, par = ext.chain_forward(z, down_order, down_ptr, down_cols)
            ctx.save_for_backward(z, lq, par)
            return lp, lq

        @staticmethod
        def backward(ctx: Any, gp: Tensor, gq: Tensor) -> Tensor:
            z, lq, par = ctx.saved_tensors
            return ext.chain_backward(z, lq, par, down_order, gp, gq)

    def k_mcloss(z: Tensor, y: Tensor) -> Tensor:
        both = KMax.apply(torch.cat([z, torch.where(y > 0.5, z, float("-inf"))]))
        n_ = z.shape[0]
        return F.binary_cross_entropy_with_logits(torch.where(y > 0.5, both[n_:], both[:n_]), y)

    def k_chain_bce(z: Tensor, y: Tensor) -> Tensor:
        lp, lq = KChain.apply(z)
        return -(y * lp + (1 - y) * lq).mean()

    torch.manual_seed(0)
    x = torch.randn(n, c)
    y = h.propagate((torch.rand(n, c) < 0.05).float())
    mcm, mcl, crb = MaxConstraint(h), MCLoss(h, validate_args=False), ChainRuleBCELoss(h, validate_args=False)
    cases = {
        "BCEWithLogitsLoss": lambda v: F.binary_cross_entropy_with_logits(v, y),
        "MaxConstraint + BCE (engine)": lambda v: F.binary_cross_entropy_with_logits(mcm(v), y),
        "MaxConstraint + BCE (C++ prototype)": lambda v: F.binary_cross_entropy_with_logits(KMax.apply(v), y),
        "MCLoss (engine)": lambda v: mcl(v, y),
        "MCLoss (C++ prototype)": lambda v: k_mcloss(v, y),
        "ChainRuleBCELoss (engine)": lambda v: crb(v, y),
        "ChainRuleBCELoss (C++ prototype)": lambda v: k_chain_bce(v, y),
    }
    # the prototype must give the engine's values and gradients
    for a, b in (("MaxConstraint + BCE (engine)", "MaxConstraint + BCE (C++ prototype)"),
                 ("MCLoss (engine)", "MCLoss (C++ prototype)"), ("ChainRuleBCELoss (engine)",
                                                                  "ChainRuleBCELoss (C++ prototype)")):
        va, vb = x.clone().requires_grad_(), x.clone().requires_grad_()
        la, lb = cases[a](va), cases[b](vb)
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
             "metric": "x BCE", "value": v / base, "ms": v * 1e3} for k, v in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    rows = run(n=args.n)
    print("| operation | ms | × BCE |\n|---|---|---|")
    for r in rows:
        print(f"| {r['loss']} | {r['ms']:.2f} | {r['value']:.2f} |")
    if args.out:
        import os

        info = {"cpu": platform.processor(), "torch": torch.__version__, "threads": 1,
                "load_average": os.getloadavg()}
        try:
            with open("/proc/cpuinfo") as f:
                info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        args.out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
