"""What a custom CPU kernel would buy the propagation engine: C++ prototypes measured beside the engine.

The engine (:mod:`hierloss.propagation`) is made of PyTorch operations: every group of a level costs a gather, a
reduction, the arg's bookkeeping and a row write, each a pass over memory and a dispatch. This file compiles C++
kernels with ``torch.utils.cpp_extension.load_inline`` (``-O3 -march=native -ffast-math``; needs a C++ compiler and
``ninja``; nothing of it is shipped with hierloss) at two depths:

* **Walk only** (``CPP``): the max over descendants with its arg (MaxConstraint + BCE, MCLoss) and the chain rule
  with its parent and weight (ChainRuleBCELoss), forward and backward, in the engine's own layout (labels-major
  rows, the same transpositions and element-wise PyTorch operations around them), so the comparison isolates the
  walk.
* **Fused whole loss** (``FUSED_CPP``): one forward and one backward kernel per loss, each taking the samples-major
  ``(N, C)`` float32 logits and targets (and the gradient out) as they are, with the hierarchy as index arrays built
  once (CSR of children or parents, labels in topological order). The kernel takes 32 samples at a time, copies
  them transposed (8 x 8 AVX tiles) into labels-major ``(C, 32)`` scratch that stays in L2, walks the labels with
  the inner loops over the block's samples (they vectorise: selects written as arithmetic, ``exp`` through glibc's
  libmvec, ``log1p`` as an inline series), and computes the loss terms and their sum in the same pass. What the
  backward needs is kept in that blocked layout: for the max losses ``sigmoid(constrained logit) - y`` and, for
  every label with children, which child its max came from (int32; MCLoss: one for each of its two maxima), so the
  backward walks the gradient down to the element holding the max (ties: smallest column index, as the engine); for
  the chain rule, for every label with parents, the parent taken (int32) and the weight ``w``, the backward
  recomputing ``sigmoid(z)``. The backward writes the ``(N, C)`` gradient transposed from the block: samples-major in
  and out, no PyTorch operation around the kernels. What is left is the element-wise work itself (``exp`` and
  ``log1p``, twice each per element in the chain rule's forward) and the transpositions; the walk is a small part.

Each kernel is checked against hierloss (values and gradients, on cellcycle_GO N = 256, CheXpert N = 4096 and
cellcycle_GO N = 4, the HMC harness's batch, and the fused ones also on small random DAGs with integer logits, where
ties are everywhere and the gradients must go to the same elements), then everything is timed against
``BCEWithLogitsLoss`` forward + backward, round-robin in one run on one thread, with the goals of
``bench_propagation.py``. The fused kernels are a measurement, not a
proposal: a pure-Python package cannot ship them, and they would be a second implementation to keep in step with
the engine (no ``pos_weight``, no ``ignore_index``, mean reduction only, float32 on CPU).

Run: ``python benchmarks/kernel_prototype.py [--out results.json] [--block 32|64]`` (about a minute to compile each
extension the first time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hierarchies import benchmark_hierarchy
from _timing import machine, median_seconds_interleaved
from bench_losses import inputs
from bench_propagation import GOALS, operations
from hierloss import ChainRuleBCELoss, Hierarchy, MaxConstraint, MCLoss

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

FUSED_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#ifdef __AVX__
#include <immintrin.h>
#endif
#include <vector>

// Fused whole-loss kernels. Inputs and the gradient are samples-major (N, C); the kernels take B samples at a time,
// copy them transposed into labels-major (C, B) scratch (row c: label c for the block's samples), walk the labels
// with the inner loops over the B samples, and keep what the backward needs in that blocked layout:
// (num_blocks, rows, B). Padding lanes of the last block are zeros, left out of the loss and never written back.

namespace {

// an 8 x 8 tile: dst row i (stride ds) = src column i (rows of stride ss)
inline void transpose8(const float* __restrict__ src, int64_t ss, float* __restrict__ dst, int64_t ds) {
#ifdef __AVX__
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
         r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
         r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  constexpr int lo = _MM_SHUFFLE(1, 0, 1, 0), hi = _MM_SHUFFLE(3, 2, 3, 2);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, lo), u1 = _mm256_shuffle_ps(t0, t2, hi), u2 = _mm256_shuffle_ps(t1, t3, lo),
         u3 = _mm256_shuffle_ps(t1, t3, hi), u4 = _mm256_shuffle_ps(t4, t6, lo), u5 = _mm256_shuffle_ps(t4, t6, hi),
         u6 = _mm256_shuffle_ps(t5, t7, lo), u7 = _mm256_shuffle_ps(t5, t7, hi);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[i * ds + j] = src[j * ss + i];
#endif
}

// rows n0 .. n0 + nb of a samples-major (N, C) array -> a labels-major (C, B) block; padding lanes get 0
template <int B>
void load_block(const float* __restrict__ src, int64_t n0, int64_t nb, int64_t c, float* __restrict__ dst) {
  const int64_t c8 = c - c % 8;
  for (int64_t s0 = 0; s0 < B; s0 += 8) {
    if (s0 + 8 <= nb) {
      const float* rows = src + (n0 + s0) * c;
      for (int64_t l = 0; l < c8; l += 8) transpose8(rows + l, c, dst + l * B + s0, B);
      for (int64_t l = c8; l < c; ++l)
        for (int64_t s = 0; s < 8; ++s) dst[l * B + s0 + s] = rows[s * c + l];
    } else {
      for (int64_t s = s0; s < s0 + 8; ++s) {
        if (s < nb) {
          const float* row = src + (n0 + s) * c;
          for (int64_t l = 0; l < c; ++l) dst[l * B + s] = row[l];
        } else {
          for (int64_t l = 0; l < c; ++l) dst[l * B + s] = 0.f;
        }
      }
    }
  }
}

// a labels-major (C, B) block -> rows n0 .. n0 + nb of a samples-major (N, C) array
template <int B>
void store_block(const float* __restrict__ src, int64_t n0, int64_t nb, int64_t c, float* __restrict__ dst) {
  const int64_t c8 = c - c % 8;
  for (int64_t s0 = 0; s0 < nb; s0 += 8) {
    float* rows = dst + (n0 + s0) * c;
    if (s0 + 8 <= nb) {
      for (int64_t l = 0; l < c8; l += 8) transpose8(src + l * B + s0, B, rows + l, c);
      for (int64_t l = c8; l < c; ++l)
        for (int64_t s = 0; s < 8; ++s) rows[s * c + l] = src[l * B + s0 + s];
    } else {
      for (int64_t s = 0; s < nb - s0; ++s)
        for (int64_t l = 0; l < c; ++l) rows[s * c + l] = src[l * B + s0 + s];
    }
  }
}

// `take ? a : b` for a mask `take` of 0 or -1, in bits: a select written as arithmetic stays a plain store (GCC
// turns `x[s] = c ? y : x[s]` into a masked store behind a branch on the mask, which mispredicts on random data)
inline float blend(int32_t take, float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  const int32_t r = ib ^ ((ia ^ ib) & take);
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}

inline int32_t blend(int32_t take, int32_t a, int32_t b) { return b ^ ((a ^ b) & take); }

// log(1 + e) for e in [0, 1] (e = exp(-|x|) in every use): 2 atanh(t), t = e / (2 + e) in [0, 1/3], the odd
// series to t^15, relative error under 3e-7; inline, so it vectorises with its loop (twice as fast as libmvec's log1pf)
inline float log1p_unit(float e) {
  const float t = e / (2.f + e), t2 = t * t;
  float p = 1.f / 15;
  p = p * t2 + 1.f / 13;
  p = p * t2 + 1.f / 11;
  p = p * t2 + 1.f / 9;
  p = p * t2 + 1.f / 7;
  p = p * t2 + 1.f / 5;
  p = p * t2 + 1.f / 3;
  p = p * t2 + 1.f;
  return 2.f * t * p;
}

// one candidate of a closure max: child row (xc, ac) against the parent's running max (xp, ap); ties go to the
// smaller column index; `via` records which child slot j won (-1: the label itself)
template <int B>
inline void max_step(float* __restrict__ xp, int32_t* __restrict__ ap, int32_t* __restrict__ vp,
                     const float* __restrict__ xc, const int32_t* __restrict__ ac, int32_t j) {
  for (int s = 0; s < B; ++s) {
    const float x0 = xp[s], x1 = xc[s];
    const int32_t a0 = ap[s], a1 = ac[s];
    const int32_t take = -(int32_t)((x1 > x0) | ((x1 == x0) & (a1 < a0)));
    xp[s] = std::max(x0, x1);
    ap[s] = blend(take, a1, a0);
    vp[s] = blend(take, j, vp[s]);
  }
}

// the max's backward for one edge: the child gets the parent's gradient where the parent took it
template <int B>
inline void pass_down(float* __restrict__ gc, const float* __restrict__ gp, const int32_t* __restrict__ vp,
                      int32_t j) {
  for (int s = 0; s < B; ++s) gc[s] += blend(-(int32_t)(vp[s] == j), gp[s], 0.f);
}

template <int B>
inline void keep_own(float* __restrict__ gp, const int32_t* __restrict__ vp) {
  for (int s = 0; s < B; ++s) gp[s] = blend(-(int32_t)(vp[s] < 0), gp[s], 0.f);
}

// BCE with logits of the block's x (C, B) against y, summed over the nb real lanes; d = sigmoid(x) - y. One flat
// loop over the block (a loop of B iterations with calls in it may be unrolled before it is vectorised)
template <int B>
double bce_block(const float* __restrict__ x, const float* __restrict__ y, int64_t c, int64_t nb,
                 float* __restrict__ d) {
  double sum = 0.0;
  for (int64_t r = 0; r < c * B; ++r) {
    const float e = std::exp(-std::fabs(x[r]));
    const float inv = 1.f / (1.f + e);
    const float l = std::max(x[r], 0.f) - x[r] * y[r] + log1p_unit(e);
    sum += (r & (B - 1)) < nb ? (double)l : 0.0;
    d[r] = std::fmax(e, std::copysign(1.f, x[r])) * inv - y[r];  // sigmoid(x) - y, without a select
  }
  return sum;
}

struct Csr {
  const int64_t* ord;
  int64_t k;
  const int64_t* rp;
  const int64_t* cl;
};

Csr csr(const torch::Tensor& order, const torch::Tensor& ptr, const torch::Tensor& cols) {
  return {order.data_ptr<int64_t>(), order.numel(), ptr.data_ptr<int64_t>(), cols.data_ptr<int64_t>()};
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous (N, C) float32 CPU tensor");
}

// ----------------------------------------------------------------------------------------- MaxConstraint + BCE
// forward: the block's closure max walk (children first), then BCE; saves d = sigmoid(MCM(z)) - y (C, B) and the
// winning child slot of every label with children (K, B)
template <int B>
std::vector<torch::Tensor> mcm_bce_forward_b(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                             torch::Tensor ptr, torch::Tensor cols) {
  check_rows(z, "input");
  check_rows(y, "target");
  const int64_t n = z.size(0), c = z.size(1), nblk = (n + B - 1) / B;
  const Csr h = csr(order, ptr, cols);
  auto d_t = torch::empty({nblk, c, B});
  auto via_t = torch::empty({nblk, h.k, B}, torch::kInt);
  auto part = torch::zeros({nblk}, torch::kDouble);
  const float* zp = z.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  float* dp = d_t.data_ptr<float>();
  int32_t* vap = via_t.data_ptr<int32_t>();
  double* pp = part.data_ptr<double>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> xs(c * B), ys(c * B);
    std::vector<int32_t> as(c * B);
    float* x = xs.data();
    float* yv = ys.data();
    int32_t* a = as.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      load_block<B>(zp, n0, nb, c, x);
      load_block<B>(yp, n0, nb, c, yv);
      for (int64_t l = 0; l < c; ++l)
        for (int s = 0; s < B; ++s) a[l * B + s] = (int32_t)l;
      int32_t* v = vap + blk * h.k * B;
      for (int64_t i = 0; i < h.k; ++i) {
        const int64_t p = h.ord[i];
        int32_t* vp = v + i * B;
        for (int s = 0; s < B; ++s) vp[s] = -1;
        for (int64_t e = h.rp[p]; e < h.rp[p + 1]; ++e)
          max_step<B>(x + p * B, a + p * B, vp, x + h.cl[e] * B, a + h.cl[e] * B, (int32_t)(e - h.rp[p]));
      }
      pp[blk] = bce_block<B>(x, yv, c, nb, dp + blk * c * B);
    }
  });
  return {(part.sum() / (double)(n * c)).to(torch::kFloat), d_t, via_t};
}

// backward: d·scale, walked down (parents first) to the element holding each max, written samples-major
template <int B>
torch::Tensor mcm_bce_backward_b(torch::Tensor d_t, torch::Tensor via_t, torch::Tensor grad_out,
                                 torch::Tensor order, torch::Tensor ptr, torch::Tensor cols, int64_t n) {
  const int64_t nblk = d_t.size(0), c = d_t.size(1);
  const Csr h = csr(order, ptr, cols);
  const float scale = grad_out.item<float>() / (float)(n * c);
  auto grad = torch::empty({n, c});
  const float* dp = d_t.data_ptr<float>();
  const int32_t* vap = via_t.data_ptr<int32_t>();
  float* gout = grad.data_ptr<float>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> gs(c * B);
    float* g = gs.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      const float* d = dp + blk * c * B;
      for (int64_t r = 0; r < c * B; ++r) g[r] = d[r] * scale;
      const int32_t* v = vap + blk * h.k * B;
      for (int64_t i = h.k - 1; i >= 0; --i) {
        const int64_t p = h.ord[i];
        const int32_t* vp = v + i * B;
        for (int64_t e = h.rp[p]; e < h.rp[p + 1]; ++e)
          pass_down<B>(g + h.cl[e] * B, g + p * B, vp, (int32_t)(e - h.rp[p]));
        keep_own<B>(g + p * B, vp);
      }
      store_block<B>(g, n0, nb, c, gout);
    }
  });
  return grad;
}

// --------------------------------------------------------------------------------------------------- MCLoss
// forward: both closure maxima (of z, and of z masked with -FLT_MAX where y <= 0.5) in one walk, the constrained
// logit where(y > 0.5, masked max, max), BCE; saves d and both winning child slots
template <int B>
std::vector<torch::Tensor> mc_loss_forward_b(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                             torch::Tensor ptr, torch::Tensor cols) {
  check_rows(z, "input");
  check_rows(y, "target");
  const int64_t n = z.size(0), c = z.size(1), nblk = (n + B - 1) / B;
  const Csr h = csr(order, ptr, cols);
  auto d_t = torch::empty({nblk, c, B});
  auto via_t = torch::empty({nblk, 2, h.k, B}, torch::kInt);
  auto part = torch::zeros({nblk}, torch::kDouble);
  const float* zp = z.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  float* dp = d_t.data_ptr<float>();
  int32_t* vap = via_t.data_ptr<int32_t>();
  double* pp = part.data_ptr<double>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> xs(c * B), xms(c * B), ys(c * B);
    std::vector<int32_t> as(c * B), ams(c * B);
    float* x = xs.data();
    float* xm = xms.data();
    float* yv = ys.data();
    int32_t* a = as.data();
    int32_t* am = ams.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      load_block<B>(zp, n0, nb, c, x);
      load_block<B>(yp, n0, nb, c, yv);
      for (int64_t l = 0; l < c; ++l)
        for (int s = 0; s < B; ++s) {
          const int64_t r = l * B + s;
          xm[r] = blend(-(int32_t)(yv[r] > 0.5f), x[r], -FLT_MAX);
          a[r] = am[r] = (int32_t)l;
        }
      int32_t* v = vap + blk * 2 * h.k * B;
      int32_t* vm = v + h.k * B;
      for (int64_t i = 0; i < h.k; ++i) {
        const int64_t p = h.ord[i];
        int32_t* vp = v + i * B;
        int32_t* vmp = vm + i * B;
        for (int s = 0; s < B; ++s) vp[s] = vmp[s] = -1;
        for (int64_t e = h.rp[p]; e < h.rp[p + 1]; ++e) {
          const int64_t ch = h.cl[e];
          const int32_t j = (int32_t)(e - h.rp[p]);
          max_step<B>(x + p * B, a + p * B, vp, x + ch * B, a + ch * B, j);
          max_step<B>(xm + p * B, am + p * B, vmp, xm + ch * B, am + ch * B, j);
        }
      }
      for (int64_t r = 0; r < c * B; ++r) x[r] = blend(-(int32_t)(yv[r] > 0.5f), xm[r], x[r]);
      pp[blk] = bce_block<B>(x, yv, c, nb, dp + blk * c * B);
    }
  });
  return {(part.sum() / (double)(n * c)).to(torch::kFloat), d_t, via_t};
}

// backward: d·scale goes to the masked walk where y > 0.5 and to the plain one elsewhere; both walked down
template <int B>
torch::Tensor mc_loss_backward_b(torch::Tensor d_t, torch::Tensor via_t, torch::Tensor y, torch::Tensor grad_out,
                                 torch::Tensor order, torch::Tensor ptr, torch::Tensor cols) {
  const int64_t nblk = d_t.size(0), c = d_t.size(1), n = y.size(0);
  const Csr h = csr(order, ptr, cols);
  const float scale = grad_out.item<float>() / (float)(n * c);
  auto grad = torch::empty({n, c});
  const float* dp = d_t.data_ptr<float>();
  const int32_t* vap = via_t.data_ptr<int32_t>();
  const float* yp = y.data_ptr<float>();
  float* gout = grad.data_ptr<float>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> gs(c * B), gms(c * B);
    float* g = gs.data();
    float* gm = gms.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      load_block<B>(yp, n0, nb, c, gm);  // the target, then the masked walk's gradient in its place
      const float* d = dp + blk * c * B;
      for (int64_t r = 0; r < c * B; ++r) {
        const bool pos = gm[r] > 0.5f;
        const float v = d[r] * scale;
        g[r] = pos ? 0.f : v;
        gm[r] = pos ? v : 0.f;
      }
      const int32_t* v = vap + blk * 2 * h.k * B;
      const int32_t* vm = v + h.k * B;
      for (int64_t i = h.k - 1; i >= 0; --i) {
        const int64_t p = h.ord[i];
        const int32_t* vp = v + i * B;
        const int32_t* vmp = vm + i * B;
        for (int64_t e = h.rp[p]; e < h.rp[p + 1]; ++e) {
          const int64_t ch = h.cl[e];
          const int32_t j = (int32_t)(e - h.rp[p]);
          pass_down<B>(g + ch * B, g + p * B, vp, j);
          pass_down<B>(gm + ch * B, gm + p * B, vmp, j);
        }
        keep_own<B>(g + p * B, vp);
        keep_own<B>(gm + p * B, vmp);
      }
      for (int64_t r = 0; r < c * B; ++r) g[r] += gm[r];
      store_block<B>(g, n0, nb, c, gout);
    }
  });
  return grad;
}

// --------------------------------------------------------------------------------------------- the chain rule
// forward: log P = logsigmoid(z) + min over parents of log P(parent) (the parent of smallest marginal, ties to
// the smaller index), log(1 - P) = logaddexp(logsigmoid(-z), logsigmoid(z) + log(1 - P(that parent))), walked
// parents first; the loss -(y log P + (1 - y) log(1 - P)). Saves, for every label with parents (G, B), the
// parent slot taken and w = exp(logsigmoid(z) + log(1 - P(parent)) - log(1 - P)).
template <int B>
std::vector<torch::Tensor> chain_bce_forward_b(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                               torch::Tensor ptr, torch::Tensor cols) {
  check_rows(z, "input");
  check_rows(y, "target");
  const int64_t n = z.size(0), c = z.size(1), nblk = (n + B - 1) / B;
  const Csr h = csr(order, ptr, cols);
  auto w_t = torch::empty({nblk, h.k, B});
  auto pick_t = torch::empty({nblk, h.k, B}, torch::kInt);
  auto part = torch::zeros({nblk}, torch::kDouble);
  const float* zp = z.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  float* wp = w_t.data_ptr<float>();
  int32_t* pkp = pick_t.data_ptr<int32_t>();
  double* pp = part.data_ptr<double>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> lps(c * B), lqs(c * B), ys(c * B);
    float* lp = lps.data();
    float* lq = lqs.data();
    float* yv = ys.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      load_block<B>(zp, n0, nb, c, lq);  // z, then logsigmoid(-z) in its place
      load_block<B>(yp, n0, nb, c, yv);
      for (int64_t r = 0; r < c * B; ++r) {
        const float zz = lq[r];
        const float t = log1p_unit(std::exp(-std::fabs(zz)));
        lp[r] = std::min(zz, 0.f) - t;
        lq[r] = std::min(-zz, 0.f) - t;
      }
      float* w = wp + blk * h.k * B;
      int32_t* pk = pkp + blk * h.k * B;
      for (int64_t i = 0; i < h.k; ++i) {
        const int64_t ch = h.ord[i];
        const int64_t e0 = h.rp[ch], e1 = h.rp[ch + 1];
        float low[B], lqsel[B];
        int32_t pick[B];
        {
          const float* lpp = lp + h.cl[e0] * B;
          const float* lqp = lq + h.cl[e0] * B;
          for (int s = 0; s < B; ++s) { low[s] = lpp[s]; lqsel[s] = lqp[s]; pick[s] = 0; }
        }
        for (int64_t e = e0 + 1; e < e1; ++e) {  // parents in index order: a tie keeps the first
          const float* lpp = lp + h.cl[e] * B;
          const float* lqp = lq + h.cl[e] * B;
          const int32_t j = (int32_t)(e - e0);
          for (int s = 0; s < B; ++s) {
            const int32_t take = -(int32_t)(lpp[s] < low[s]);
            low[s] = std::min(low[s], lpp[s]);
            lqsel[s] = blend(take, lqp[s], lqsel[s]);
            pick[s] = blend(take, j, pick[s]);
          }
        }
        float* __restrict__ lpc = lp + ch * B;
        float* __restrict__ lqc = lq + ch * B;
        float* __restrict__ wc = w + i * B;
        int32_t* __restrict__ pc = pk + i * B;
        for (int s = 0; s < B; ++s) {
          const float b = lpc[s], a = lqc[s];
          const float second = b + lqsel[s];
          const float dd = a - second;
          const float e = std::exp(-std::fabs(dd));
          const float inv = 1.f / (1.f + e);
          lpc[s] = b + low[s];
          lqc[s] = std::max(a, second) + log1p_unit(e);
          wc[s] = dd > 0.f ? e * inv : inv;
          pc[s] = pick[s];
        }
      }
      double sum = 0.0;
      for (int64_t r = 0; r < c * B; ++r)
        sum -= (r & (B - 1)) < nb ? (double)(lq[r] + yv[r] * (lp[r] - lq[r])) : 0.0;
      pp[blk] = sum;
    }
  });
  return {(part.sum() / (double)(n * c)).to(torch::kFloat), w_t, pick_t};
}

// backward: gp = -y·g, gq = -(1 - y)·g; children first, each label passes gp and gq·w on to the parent it took,
// then its gradient is gp - sigmoid(z)(gp + gq) + gq·w (roots: without the last term)
template <int B>
torch::Tensor chain_bce_backward_b(torch::Tensor w_t, torch::Tensor pick_t, torch::Tensor z, torch::Tensor y,
                                   torch::Tensor grad_out, torch::Tensor order, torch::Tensor ptr,
                                   torch::Tensor cols, torch::Tensor roots) {
  const int64_t n = z.size(0), c = z.size(1), nblk = (n + B - 1) / B;
  const Csr h = csr(order, ptr, cols);
  const float scale = grad_out.item<float>() / (float)(n * c);
  auto grad = torch::empty({n, c});
  const float* wp = w_t.data_ptr<float>();
  const int32_t* pkp = pick_t.data_ptr<int32_t>();
  const float* zp = z.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  const int64_t* rt = roots.data_ptr<int64_t>();
  const int64_t nroots = roots.numel();
  float* gout = grad.data_ptr<float>();
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> gps(c * B), gqs(c * B), zs(c * B);
    float* gp = gps.data();
    float* gq = gqs.data();
    float* zt = zs.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * B, nb = std::min<int64_t>(B, n - n0);
      load_block<B>(zp, n0, nb, c, zt);
      load_block<B>(yp, n0, nb, c, gq);
      for (int64_t r = 0; r < c * B; ++r) {
        const float yg = gq[r] * scale;
        gp[r] = -yg;
        gq[r] = yg - scale;
      }
      const float* w = wp + blk * h.k * B;
      const int32_t* pk = pkp + blk * h.k * B;
      for (int64_t i = h.k - 1; i >= 0; --i) {
        const int64_t ch = h.ord[i];
        const int64_t e0 = h.rp[ch], e1 = h.rp[ch + 1];
        float* __restrict__ gpc = gp + ch * B;
        const float* __restrict__ gqc = gq + ch * B;
        const float* __restrict__ wc = w + i * B;
        const float* __restrict__ zc = zt + ch * B;
        float qw[B];
        for (int s = 0; s < B; ++s) qw[s] = gqc[s] * wc[s];
        if (e1 - e0 == 1) {
          float* __restrict__ gpp = gp + h.cl[e0] * B;
          float* __restrict__ gqp = gq + h.cl[e0] * B;
          for (int s = 0; s < B; ++s) { gpp[s] += gpc[s]; gqp[s] += qw[s]; }
        } else {
          const int32_t* __restrict__ pc = pk + i * B;
          for (int64_t e = e0; e < e1; ++e) {
            float* __restrict__ gpp = gp + h.cl[e] * B;
            float* __restrict__ gqp = gq + h.cl[e] * B;
            const int32_t j = (int32_t)(e - e0);
            for (int s = 0; s < B; ++s) {
              const int32_t take = -(int32_t)(pc[s] == j);
              gpp[s] += blend(take, gpc[s], 0.f);
              gqp[s] += blend(take, qw[s], 0.f);
            }
          }
        }
        for (int s = 0; s < B; ++s) {
          const float e = std::exp(-std::fabs(zc[s]));
          const float sg = std::fmax(e, std::copysign(1.f, zc[s])) / (1.f + e);
          gpc[s] = gpc[s] - sg * (gpc[s] + gqc[s]) + qw[s];
        }
      }
      for (int64_t i = 0; i < nroots; ++i) {
        const int64_t r0 = rt[i] * B;
        for (int s = 0; s < B; ++s) {
          const float e = std::exp(-std::fabs(zt[r0 + s]));
          const float sg = std::fmax(e, std::copysign(1.f, zt[r0 + s])) / (1.f + e);
          gp[r0 + s] = gp[r0 + s] - sg * (gp[r0 + s] + gq[r0 + s]);
        }
      }
      store_block<B>(gp, n0, nb, c, gout);
    }
  });
  return grad;
}

}  // namespace

// 32 or 64 samples a block: with fewer, GCC unrolls the B-iteration loops completely before it vectorises them, and
// their exp / log1p become scalar calls
#define DISPATCH(block, fn, ...)                                               \
  switch (block) {                                                             \
    case 32: return fn<32>(__VA_ARGS__);                                       \
    case 64: return fn<64>(__VA_ARGS__);                                       \
    default: TORCH_CHECK(false, "block must be 32 or 64, got ", block);        \
  }

std::vector<torch::Tensor> mcm_bce_forward(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                           torch::Tensor ptr, torch::Tensor cols, int64_t block) {
  DISPATCH(block, mcm_bce_forward_b, z, y, order, ptr, cols);
}

torch::Tensor mcm_bce_backward(torch::Tensor d, torch::Tensor via, torch::Tensor grad_out, torch::Tensor order,
                               torch::Tensor ptr, torch::Tensor cols, int64_t n) {
  DISPATCH(d.size(2), mcm_bce_backward_b, d, via, grad_out, order, ptr, cols, n);
}

std::vector<torch::Tensor> mc_loss_forward(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                           torch::Tensor ptr, torch::Tensor cols, int64_t block) {
  DISPATCH(block, mc_loss_forward_b, z, y, order, ptr, cols);
}

torch::Tensor mc_loss_backward(torch::Tensor d, torch::Tensor via, torch::Tensor y, torch::Tensor grad_out,
                               torch::Tensor order, torch::Tensor ptr, torch::Tensor cols) {
  DISPATCH(d.size(2), mc_loss_backward_b, d, via, y, grad_out, order, ptr, cols);
}

std::vector<torch::Tensor> chain_bce_forward(torch::Tensor z, torch::Tensor y, torch::Tensor order,
                                             torch::Tensor ptr, torch::Tensor cols, int64_t block) {
  DISPATCH(block, chain_bce_forward_b, z, y, order, ptr, cols);
}

torch::Tensor chain_bce_backward(torch::Tensor w, torch::Tensor pick, torch::Tensor z, torch::Tensor y,
                                 torch::Tensor grad_out, torch::Tensor order, torch::Tensor ptr, torch::Tensor cols,
                                 torch::Tensor roots) {
  DISPATCH(w.size(2), chain_bce_backward_b, w, pick, z, y, grad_out, order, ptr, cols, roots);
}
"""


def _csr(owner: Tensor, read: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(owner * num_labels + read)
    counts = torch.bincount(owner, minlength=num_labels)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), read[order].contiguous()


def build(verbose: bool = False) -> Any:
    """The walk-only extension."""
    from torch.utils.cpp_extension import load_inline

    return load_inline("hierloss_kernel_prototype_lm", cpp_sources=CPP,
                       functions=["closure_max", "chain_forward", "chain_backward"],
                       extra_cflags=["-O3", "-march=native", "-ffast-math"], verbose=verbose)


def build_fused(verbose: bool = False) -> Any:
    """The fused whole-loss extension."""
    from torch.utils.cpp_extension import load_inline

    return load_inline("hierloss_kernel_prototype_fused", cpp_sources=FUSED_CPP,
                       functions=["mcm_bce_forward", "mcm_bce_backward", "mc_loss_forward", "mc_loss_backward",
                                  "chain_bce_forward", "chain_bce_backward"],
                       extra_cflags=["-O3", "-march=native", "-ffast-math"], verbose=verbose)


class HierarchyIndex(NamedTuple):
    """The index arrays the kernels walk, built once per hierarchy: ``up`` = (labels with children, children first;
    CSR row pointers; each label's children in index order), ``down`` = (labels with parents, parents first; CSR row
    pointers; each label's parents in index order), and the roots."""

    up: tuple[Tensor, Tensor, Tensor]
    down: tuple[Tensor, Tensor, Tensor]
    roots: Tensor


def hierarchy_index(h: Hierarchy) -> HierarchyIndex:
    c = h.num_labels
    parents, children = h.edge_index
    up = torch.tensor(sorted((i for i in range(c) if h.heights[i] > 0), key=lambda i: h.heights[i]),
                      dtype=torch.long)
    down = torch.tensor(sorted((i for i in range(c) if h.depths[i] > 0), key=lambda i: h.depths[i]),
                        dtype=torch.long)
    roots = torch.tensor([i for i in range(c) if h.depths[i] == 0], dtype=torch.long)
    return HierarchyIndex((up, *_csr(parents, children, c)), (down, *_csr(children, parents, c)), roots)


LossFn = Callable[[Tensor, Tensor], Tensor]


def walk_losses(ext: Any, h: Hierarchy, y: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """The three losses with only the walk in C++ (engine layout, transpositions and element-wise work in PyTorch),
    for the targets ``y``."""
    c = h.num_labels
    index = hierarchy_index(h)
    up_order, up_ptr, up_cols = index.up
    down_order, down_ptr, down_cols = index.down

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

    pos = y > 0.5
    return {
        "MaxConstraint + BCE": lambda v: F.binary_cross_entropy_with_logits(KMax.apply(v), y),
        "MCLoss": lambda v: F.binary_cross_entropy_with_logits(KConstrained.apply(v, pos), y),
        "ChainRuleBCELoss": lambda v: KChainBCE.apply(v, y).mean(),
    }


def fused_losses(ext: Any, h: Hierarchy, block: int = 32) -> dict[str, LossFn]:
    """The three losses as fused kernels, ``f(logits, target)`` on contiguous ``(N, C)`` float32 tensors, mean over
    ``N·C``; differentiable in the logits only."""
    index = hierarchy_index(h)

    class FusedMaxConstraintBCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
            loss, d, via = ext.mcm_bce_forward(z, y, *index.up, block)
            ctx.save_for_backward(d, via)
            ctx.n = z.shape[0]
            return loss

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
            d, via = ctx.saved_tensors
            return ext.mcm_bce_backward(d, via, g, *index.up, ctx.n), None

    class FusedMCLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
            loss, d, via = ext.mc_loss_forward(z, y, *index.up, block)
            ctx.save_for_backward(d, via, y)
            return loss

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
            d, via, y = ctx.saved_tensors
            return ext.mc_loss_backward(d, via, y, g, *index.up), None

    class FusedChainRuleBCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
            loss, w, pick = ext.chain_bce_forward(z, y, *index.down, block)
            ctx.save_for_backward(w, pick, z, y)
            return loss

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
            w, pick, z, y = ctx.saved_tensors
            return ext.chain_bce_backward(w, pick, z, y, g, *index.down, index.roots), None

    return {"MaxConstraint + BCE": FusedMaxConstraintBCE.apply, "MCLoss": FusedMCLoss.apply,
            "ChainRuleBCELoss": FusedChainRuleBCE.apply}


def engine_losses(h: Hierarchy) -> dict[str, LossFn]:
    """hierloss's own losses, ``f(logits, target)``."""
    mcm, mcl = MaxConstraint(h), MCLoss(h, validate_args=False)
    crb = ChainRuleBCELoss(h, validate_args=False)
    return {"MaxConstraint + BCE": lambda z, y: F.binary_cross_entropy_with_logits(mcm(z), y),
            "MCLoss": lambda z, y: mcl(z, y), "ChainRuleBCELoss": lambda z, y: crb(z, y)}


def _value_and_grad(fn: Callable[[Tensor], Any], x: Tensor) -> tuple[Tensor, Tensor]:
    v = x.detach().clone().requires_grad_()
    loss = fn(v)
    (loss * 1.7).backward()  # a gradient out other than 1
    assert v.grad is not None
    return loss.detach(), v.grad


def check_fused(ext: Any, h: Hierarchy, x: Tensor, y: Tensor, block: int, ties: bool = False) -> None:
    """The fused kernels against hierloss: values to rtol 1e-5; gradients to rtol 1e-4 and atol 1e-9 (a gradient
    element is about 1/(N·C) here: atol 1e-6 would pass anything), or with integer logits (``ties``) to rtol 1e-5,
    where one element's gradient sent to another tied element would be off by about its own size."""
    engine, fused = engine_losses(h), fused_losses(ext, h, block)
    for name in fused:
        la, ga = _value_and_grad(lambda v, name=name: engine[name](v, y), x)
        lb, gb = _value_and_grad(lambda v, name=name: fused[name](v, y), x)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=0.0, msg=lambda m, name=name: f"{name} loss: {m}")
        torch.testing.assert_close(gb, ga, rtol=1e-5 if ties else 1e-4, atol=1e-9,
                                   msg=lambda m, name=name: f"{name} gradient: {m}")


def check_ties(ext: Any, block: int) -> str:
    """The fused kernels on small random DAGs with integer logits in [-2, 2] (ties everywhere: closure maxima held by
    several elements, parents with equal marginals), N not a multiple of the block."""
    from _hierarchies import synthetic_dag

    for seed in range(3):
        h = synthetic_dag(60, 110, depth=5, roots=3, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        n = 2 * block - 11
        x = torch.randint(-2, 3, (n, h.num_labels), generator=gen).float()
        y = h.propagate((torch.rand(n, h.num_labels, generator=gen) < 0.1).float())
        check_fused(ext, h, x, y, block, ties=True)
    return f"3 random DAGs (60 labels, 110 edges), N={2 * block - 11}, integer logits"


def run(h_name: str = "go", n: int = 256, repeat: int = 15, block: int = 32, ext: Any = None,
        fused_ext: Any = None) -> list[dict[str, Any]]:
    """Rows for one case: BCE, each loss by the engine, with the C++ walk and fused, forward + backward, round-robin
    on one thread."""
    torch.set_num_threads(1)
    ext = build() if ext is None else ext
    fused_ext = build_fused() if fused_ext is None else fused_ext
    h, label = benchmark_hierarchy(h_name)
    c = h.num_labels
    x, y = inputs(h, n, "cpu", "fp32")
    y = y.detach()
    engine_ops = operations(h, y)
    walk, fused = walk_losses(ext, h, y), fused_losses(fused_ext, h, block)
    cases: dict[str, Callable[[Tensor], Any]] = {"BCEWithLogitsLoss": engine_ops["BCEWithLogitsLoss"]}
    for name in walk:
        cases[f"{name} (engine)"] = engine_ops[name]
        cases[f"{name} (C++ walk)"] = walk[name]
        cases[f"{name} (C++ fused)"] = lambda v, f=fused[name]: f(v, y)
    # the prototypes must give the engine's values and gradients
    for name in walk:
        la, ga = _value_and_grad(cases[f"{name} (engine)"], x)
        lb, gb = _value_and_grad(cases[f"{name} (C++ walk)"], x)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-7)
    check_fused(fused_ext, h, x.detach(), y, block)

    def step(fn: Callable[[Tensor], Any]) -> Callable[[], None]:
        def go() -> None:
            x.grad = None
            fn(x).backward()
        return go

    times = median_seconds_interleaved({k: step(f) for k, f in cases.items()}, device="cpu", warmup=2,
                                       repeat=repeat, min_time=0.02)
    base = times["BCEWithLogitsLoss"]
    return [{"group": "kernel_prototype", "case": f"{label} C={c} E={h.num_edges} N={n} fp32 eager", "loss": k,
             "metric": "x_bce", "value": v / base, "ms": v * 1e3} for k, v in times.items()]


# the goals' two cases, and GO at the HMC harness's batch of 4, where a step's time is the engine's fixed cost per
# group of labels
CASES = (("go", 256), ("chexpert", 4096), ("go", 4))


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--block", type=int, default=32, choices=(32, 64), help="samples per block (fused kernels)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    meta = machine("cpu", 1)
    ext, fused_ext = build(), build_fused()
    meta["fused_block"] = args.block
    meta["tie_check"] = check_ties(fused_ext, args.block)
    rows: list[dict[str, Any]] = []
    for h_name, n in CASES:
        case_rows = run(h_name, n, repeat=args.repeat, block=args.block, ext=ext, fused_ext=fused_ext)
        rows += case_rows
        goals = GOALS.get((h_name, n), {})
        print(f"\n{case_rows[0]['case']}\n\n| operation | ms | × BCE | goal |\n|---|---|---|---|")
        for r in case_rows:
            goal = goals.get(r["loss"].split(" (")[0], "") if "(C++ fused)" in r["loss"] else ""
            print(f"| {r['loss']} | {r['ms']:.3f} | {r['value']:.2f} | {goal} |")
    meta["load_average_end"] = os.getloadavg()
    print(f"\nload average: start {meta['load_average_start']}, end {meta['load_average_end']}")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
