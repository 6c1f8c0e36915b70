"""Tests for hierloss._custom_ops: when the custom operators run, and the dispatch state of their kernels."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from hierloss._custom_ops import compiled, kernel_dispatch


def _sign(x: Tensor) -> Tensor:
    return x + 1 if compiled() else x - 1


def test_compiled_only_under_torch_compile() -> None:
    """compiled() is False in eager mode and under torch.export, True while torch.compile traces."""
    x = torch.zeros(2)
    assert torch.equal(_sign(x), x - 1)
    assert torch.equal(torch.compile(_sign, fullgraph=True, backend="eager")(x), x + 1)

    class Sign(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return _sign(x)

    assert torch.equal(torch.export.export(Sign(), (x,)).module()(x), x - 1)


def test_kernel_dispatch_records_nothing_and_changes_no_value() -> None:
    """Inside kernel_dispatch operations on a tensor that requires grad make no graph, and give the same values as
    under no_grad."""
    x = torch.randn(3, 4, requires_grad=True)
    with kernel_dispatch():
        out = x.t().contiguous().index_select(0, torch.tensor([2, 0])).amax(1)
        buffer = torch.zeros(4, 3)
        buffer.index_copy_(0, torch.tensor([1]), x.t()[:1])
    assert out.grad_fn is None and not out.requires_grad and buffer.grad_fn is None
    with torch.no_grad():
        torch.testing.assert_close(out, x.t().contiguous().index_select(0, torch.tensor([2, 0])).amax(1))
        torch.testing.assert_close(buffer[1], x.t()[0])


def test_compiled_loss_without_the_private_dispatch_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyTorch lacks its private below-ADInplaceOrView guard, kernel_dispatch is a no-op and a compiled loss
    still equals eager mode, value and gradient (the dispatcher runs the kernels below autograd)."""
    import hierloss._custom_ops as ops
    from hierloss import Hierarchy, MCLoss

    monkeypatch.setattr(ops, "_BELOW_AD_INPLACE_OR_VIEW", None)
    h = Hierarchy.from_dict({"a": ["b", "c"], "c": ["d"]})
    criterion = MCLoss(h)
    x = torch.randn(5, h.num_labels, requires_grad=True)
    y = h.propagate((torch.rand(5, h.num_labels, generator=torch.Generator().manual_seed(0)) < 0.4).float())
    torch._dynamo.reset()
    got = torch.compile(criterion, fullgraph=True, backend="aot_eager")(x, y)
    want = criterion(x, y)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])
