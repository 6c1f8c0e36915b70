"""Tests for hierloss._masking: the clean target and validity mask shared by every loss."""

from __future__ import annotations

import pytest
import torch

from hierloss import _masking
from hierloss._masking import target_mask


def _naive(target: torch.Tensor, ignore_index: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Element by element: an entry is invalid when NaN or equal to ignore_index; invalid entries become 0."""
    clean, valid = target.clone(), torch.ones(target.shape, dtype=torch.bool)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in target.shape)):
        value = target[tuple(idx)]
        bad = bool(torch.isnan(value)) if target.is_floating_point() else False
        bad = bad or (ignore_index is not None and float(value) == ignore_index)
        if bad:
            clean[tuple(idx)], valid[tuple(idx)] = 0, False
    return clean, valid


@pytest.mark.parametrize("ignore_index", [None, -1.0])
@pytest.mark.parametrize("nan_shortcut", [True, False])
@pytest.mark.parametrize("path", ["eager-cpu", "elementwise"])
def test_mask_matches_naive(ignore_index: float | None, nan_shortcut: bool, path: str,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean target and bool mask equal an element-by-element reference, on the CPU (with and without the NaN-free
    shortcut) and on the element-wise path accelerators and torch.compile take."""
    if path == "elementwise":
        monkeypatch.setattr(_masking, "on_eager_cpu", lambda tensor: False)
    torch.manual_seed(0)
    target = (torch.rand(5, 4) < 0.5).float()
    target[0, 1], target[2, 2], target[3, 0] = float("nan"), -1.0, float("nan")
    clean, valid = target_mask(target, ignore_index, nan_shortcut=nan_shortcut)
    want_clean, want_valid = _naive(target, ignore_index)
    torch.testing.assert_close(clean, want_clean)
    assert valid is not None and valid.dtype == torch.bool
    torch.testing.assert_close(valid, want_valid)


def test_integer_target() -> None:
    """Integer targets have no NaN: no mask without ignore_index, the ignore mask with it."""
    target = torch.tensor([[0, 1, -1], [1, -1, 0]])
    assert target_mask(target, None) == (target, None)
    assert target_mask(target, None, nan_shortcut=False) == (target, None)
    clean, valid = target_mask(target, -1)
    want_clean, want_valid = _naive(target, -1)
    torch.testing.assert_close(clean.to(torch.long), want_clean)
    assert valid is not None
    torch.testing.assert_close(valid, want_valid.to(valid.dtype))


def test_nan_free_float_target_needs_no_mask() -> None:
    """A float target without NaN and no ignore_index gives no mask on the CPU (the sum decides), unless the
    shortcut is off; a target holding NaN always gets one."""
    target = (torch.rand(6, 3) < 0.5).float()
    clean, valid = target_mask(target, None)
    assert clean is target and valid is None
    clean, valid = target_mask(target, None, nan_shortcut=False)
    assert valid is not None and bool(valid.all())
    target[1, 1] = float("nan")
    assert target_mask(target, None)[1] is not None
