"""Tests for hierloss.losses._elementwise: a row-wise loss swept over the CPU in blocks of a few rows gives the loss
and gradient of one block."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from hierloss.functional import multilabel_softmax_loss, zlpr_loss
from hierloss.losses import _elementwise as elementwise


@pytest.mark.parametrize("loss", [zlpr_loss, multilabel_softmax_loss], ids=["zlpr", "multilabel_softmax"])
def test_row_losses_in_blocks_of_rows(loss: Callable[[Tensor, Tensor], Tensor],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Swept in blocks of 3 rows, a row-wise loss and its gradient equal those of one block."""
    torch.manual_seed(11)
    logits = (3 * torch.randn(37, 29)).requires_grad_()
    y = torch.randint(0, 2, (37, 29)).float()
    whole = loss(logits, y)
    (g_whole,) = torch.autograd.grad(whole, logits)
    monkeypatch.setattr(elementwise, "BLOCK_BYTES", 4 * 100)  # 3 rows per block
    assert elementwise.block_numel(logits) < logits.numel()  # more than one block, or the test compares nothing
    blocks = loss(logits, y)
    (g_blocks,) = torch.autograd.grad(blocks, logits)
    torch.testing.assert_close(blocks, whole, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_blocks, g_whole, rtol=1e-6, atol=1e-9)
