"""Tests for hierloss._reduction: the masked reduction of element-wise terms and its written backward."""

from __future__ import annotations

import pytest
import torch

from hierloss._reduction import reduce_valid, reduce_valid_backward


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reduce_valid_backward_is_the_gradient_of_reduce_valid(reduction: str) -> None:
    """reduce_valid_backward equals autograd's gradient of reduce_valid, with a mask, without one and with every
    term masked (the mean then divides by 1); 'none' sets the masked terms to 0."""
    g = torch.Generator().manual_seed(0)
    for valid in (None, torch.rand(4, 5, generator=g) < 0.6, torch.zeros(4, 5, dtype=torch.bool)):
        loss = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
        out = reduce_valid(loss, reduction, valid)
        grad = torch.randn(out.shape, dtype=torch.float64, generator=g)
        (want,) = torch.autograd.grad(out, loss, grad)
        torch.testing.assert_close(reduce_valid_backward(grad, (4, 5), reduction, valid), want)
        if valid is not None and reduction == "none":
            assert bool(out.detach()[~valid].eq(0).all())  # the masked terms are 0
