"""Every loss, ``coherent`` and the penalty counts on a CUDA device: same values and gradients as on the CPU, no host
synchronisation in forward/backward (with ``validate_args=False``; the value checks read back by design), float32
results under autocast, and ``torch.compile(fullgraph=True)``.

Skipped on machines without a GPU (CI); run on a CUDA machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import hierloss
from hierloss import Hierarchy
from hierloss.edge_weights import ConditionalWeight
from hierloss.metrics import coherent

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

C = 40


def _random_dag(num_labels: int = C, seed: int = 0) -> Hierarchy:
    """A random DAG on ``num_labels`` labels: each label after the first four gets one or two earlier parents."""
    g = torch.Generator().manual_seed(seed)
    edges = []
    for child in range(4, num_labels):
        parents = torch.randperm(child, generator=g)[: 1 + int(torch.randint(0, 2, (1,), generator=g))]
        edges += [(f"L{int(p)}", f"L{child}") for p in parents]
    return Hierarchy.from_edges(edges, labels=[f"L{i}" for i in range(num_labels)])


H = _random_dag()

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "hbce-hinge": lambda: hierloss.HBCELoss(H, validate_args=False),
    "hbce-squared_hinge": lambda: hierloss.HBCELoss(H, mode="squared_hinge", validate_args=False),
    "hbce-soft": lambda: hierloss.HBCELoss(H, mode="soft", validate_args=False),
    "hbce-hard": lambda: hierloss.HBCELoss(H, mode="hard", validate_args=False),
    "asl": lambda: hierloss.AsymmetricLoss(validate_args=False),
    "focal": lambda: hierloss.FocalLoss(validate_args=False),
    "zlpr": lambda: hierloss.ZLPRLoss(validate_args=False),
    "msml": lambda: hierloss.MultiLabelSoftmaxLoss(validate_args=False),
    "mcloss": lambda: hierloss.MCLoss(H, validate_args=False),
    "conditional": lambda: hierloss.ConditionalBCELoss(H, validate_args=False),
    "chain-rule-bce": lambda: hierloss.ChainRuleBCELoss(H, validate_args=False),
}


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(n, C, generator=g)
    target = H.propagate((torch.rand(n, C, generator=g) < 0.2).float())
    return logits, target


def _loss_and_grad(module: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.clone().requires_grad_(True)
    loss = module(x, target)
    loss.backward()
    assert x.grad is not None
    return loss.detach(), x.grad


@pytest.mark.parametrize("name", list(LOSSES))
def test_cuda_matches_cpu_without_host_sync(name: str) -> None:
    logits, target = _batch()
    cpu_loss, cpu_grad = _loss_and_grad(LOSSES[name](), logits, target)
    module = LOSSES[name]().cuda()
    x, y = logits.cuda(), target.cuda()
    _loss_and_grad(module, x, y)  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in forward/backward now raises
    try:
        gpu_loss, gpu_grad = _loss_and_grad(module, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu_grad.cpu(), cpu_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(LOSSES))
def test_cuda_autocast_is_float32_and_finite(name: str, dtype: torch.dtype) -> None:
    logits, target = _batch()
    module = LOSSES[name]().cuda()
    x = (40 * logits).cuda().to(dtype).requires_grad_(True)  # ±100-ish logits in low precision
    with torch.autocast("cuda", dtype=dtype):
        loss = module(x, target.cuda())
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss).item()
    assert x.grad is not None and torch.isfinite(x.grad).all().item()


@pytest.mark.parametrize("name", ["hbce-hinge", "hbce-hard", "mcloss", "zlpr"])
def test_cuda_compile_fullgraph_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    logits, target = _batch()
    module = LOSSES[name]().cuda()
    x, y = logits.cuda(), target.cuda()
    eager_loss, eager_grad = _loss_and_grad(module, x, y)
    compiled = torch.compile(module, fullgraph=True)
    comp_loss, comp_grad = _loss_and_grad(compiled, x, y)
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(comp_grad, eager_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["max", "min"])
def test_cuda_coherent_matches_cpu(method: str) -> None:
    probs = torch.rand(256, C, generator=torch.Generator().manual_seed(2))
    on_gpu = coherent(probs.cuda(), H, method=method)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), coherent(probs, H, method=method), rtol=0, atol=0)


def test_cuda_penalty_counts_match_cpu() -> None:
    _, target = _batch(1000)
    on_cpu = ConditionalWeight().fit(H, target)
    on_gpu = ConditionalWeight().fit(H, target.cuda())
    assert on_gpu.table().equals(on_cpu.table())


@pytest.mark.parametrize("hierarchy", ["chexpert", "random"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["clean", "nan", "ignore_index"])
def test_cuda_hbce_paths_match_cpu(hierarchy: str, reduction: str, target_kind: str) -> None:
    """Every path of the fused HBCE on the GPU — dense incidence (CheXpert) or embedding_bag (random DAG), one total
    or per-sample, clean or masked targets — equals the CPU (whose own shortcuts differ) without a host sync."""
    from hierloss.datasets import chexpert_hierarchy

    h = chexpert_hierarchy() if hierarchy == "chexpert" else H
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(300, h.num_labels, generator=g)
    target = h.propagate((torch.rand(300, h.num_labels, generator=g) < 0.2).float())
    if target_kind == "nan":
        target[torch.rand(target.shape, generator=g) < 0.05] = float("nan")
    elif target_kind == "ignore_index":
        target[torch.rand(target.shape, generator=g) < 0.05] = -1.0
    ignore = -1.0 if target_kind == "ignore_index" else None
    make = lambda: hierloss.HBCELoss(h, reduction=reduction, ignore_index=ignore, validate_args=False)  # noqa: E731
    x_cpu = logits.clone().requires_grad_(True)
    cpu_loss = make()(x_cpu, target)
    cpu_loss.sum().backward()
    module = make().cuda()
    x, y = logits.cuda().requires_grad_(True), target.cuda()
    module(x, y).sum().backward()  # warm-up
    x.grad = None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu_loss = module(x, y)
        gpu_loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.grad is not None and x_cpu.grad is not None
    torch.testing.assert_close(gpu_loss.detach().cpu(), cpu_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.cpu(), x_cpu.grad, rtol=1e-4, atol=1e-7)


def test_cuda_graph_stacked_training_matches_eager_and_cpu() -> None:
    """Replaying each training step as a CUDA graph (warm-up undone, last smaller batch eager) trains every network
    of the stack to the weights of eager launches and of the CPU run (no dropout, so the runs are comparable)."""
    import dataclasses
    import sys
    from pathlib import Path

    from hierloss.datasets import make_hierarchical_classification

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from hmc_experiments import TrainConfig, train_stacked

    data = make_hierarchical_classification(203, 10, depth=3, branching=2, dag=True, random_state=0)
    config = TrainConfig(hidden=32, dropout=0.0, lr=1e-3, batch_size=4, epochs=2, device="cuda")
    runs = [("bce", 0), ("hbce", 1), ("hbce-hard", 0), ("mcloss", 1), ("conditional", 0), ("conditional-ft", 1)]
    graph = train_stacked(runs, data.X, data.Y, data.hierarchy, config, cuda_graph=True)
    eager = train_stacked(runs, data.X, data.Y, data.hierarchy, config, cuda_graph=False)
    cpu = train_stacked(runs, data.X, data.Y, data.hierarchy, dataclasses.replace(config, device="cpu"))
    for g, e, c in zip(graph, eager, cpu, strict=True):
        for pg, pe, pc in zip(g.model.parameters(), e.model.parameters(), c.model.parameters(), strict=True):
            torch.testing.assert_close(pg, pe, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(pg.cpu(), pc, rtol=1e-4, atol=1e-5)
    dropped = train_stacked(runs, data.X, data.Y, data.hierarchy, dataclasses.replace(config, dropout=0.7))
    assert all(torch.isfinite(p).all() for m in dropped for p in m.model.parameters())


@pytest.mark.parametrize("mode", ["logit_hinge", "hinge", "squared_hinge", "soft", "hard"])
@pytest.mark.parametrize("layout", ["dense", "gather"])
def test_cuda_forced_backends_and_double_backward(mode: str, layout: str) -> None:
    """On the GPU the 'reference' and 'fused' backends (both layouts) equal the CPU reference, 'fused_cpu' is
    refused, and a Hessian-vector product (create_graph=True) equals the CPU's."""
    from hierloss.losses import hbce_backend

    logits, target = _batch()
    vec = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))

    def run(device: str, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        module = hierloss.HBCELoss(H, mode=mode).to(device)
        x = logits.to(device).requires_grad_(True)
        with hbce_backend(backend, layout):
            loss = module(x, target.to(device))
            (grad,) = torch.autograd.grad(loss, x, create_graph=True)
            (hvp,) = torch.autograd.grad(grad, x, vec.to(device), allow_unused=True)
        hvp = torch.zeros_like(x) if hvp is None else hvp
        return loss.detach().cpu(), grad.detach().cpu(), hvp.detach().cpu()

    want = run("cpu", "reference")
    for backend in ("reference", "fused"):
        for got, expected in zip(run("cuda", backend), want):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with hbce_backend("fused_cpu"), pytest.raises(ValueError, match="runs only on CPU tensors in eager mode"):
        hierloss.HBCELoss(H).cuda()(logits.cuda(), target.cuda())
