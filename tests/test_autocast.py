"""Tests for hierloss._autocast: leaving autocast only when it is on."""

from __future__ import annotations

import contextlib

import torch

from hierloss._autocast import autocast_disabled


def test_no_context_when_autocast_is_off() -> None:
    """Outside autocast the helper returns a null context (nothing to leave, nothing to pay for)."""
    assert not torch.is_autocast_enabled("cpu")
    assert isinstance(autocast_disabled("cpu"), contextlib.nullcontext)


def test_disables_an_active_autocast_and_restores_it() -> None:
    """Inside CPU bf16 autocast the helper turns autocast off for its block (a matmul stays float32) and on again
    after it."""
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with autocast_disabled("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert (a @ b).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.bfloat16


def test_compiled_function_disables_autocast() -> None:
    """Under torch.compile the real context is traced: a compiled matmul inside it stays float32 under autocast."""
    torch._dynamo.reset()

    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with autocast_disabled(a.device.type):
            return a @ b

    compiled = torch.compile(matmul, fullgraph=True, backend="aot_eager")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled(a, b).dtype == torch.float32
