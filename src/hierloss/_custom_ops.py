"""What hierloss's custom operators share: when they run, and the dispatch state their kernels run in.

Under ``torch.compile`` the propagation engine's walks (:mod:`hierloss.propagation._compiled`) and the losses built
on them (:mod:`hierloss.losses._compiled`) run as ``torch.library`` custom operators: the compiled graph calls the same
eager code as eager mode, with written backwards, instead of tracing it. ``torch.export`` traces plain operations
instead (an exported program must not depend on hierloss).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["compiled", "kernel_dispatch"]


def compiled() -> bool:
    """True while ``torch.compile`` traces (and not ``torch.export``): where hierloss calls its custom operators."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


# private to PyTorch: where a build lacks it, the kernels run in the state the dispatcher calls them in (below
# autograd), a little slower and with the same values
_BELOW_AD_INPLACE_OR_VIEW = getattr(torch._C, "_AutoDispatchBelowADInplaceOrView", None)


def kernel_dispatch() -> contextlib.AbstractContextManager[object]:
    """The dispatch state a custom operator's kernel runs its eager code in: below autograd *and* below
    ``ADInplaceOrView``, as ATen's own kernels run theirs.

    The dispatcher calls a custom operator's kernel below autograd only, so each of the hundreds of small operations
    of a walk would still pass through the view and in-place bookkeeping (view tracking, version counters) that
    nothing inside a kernel needs: about 0.3 µs each on the CPU, more than a GO-sized walk saves by compiling. The
    kernels make no graph and return fresh tensors, so nothing can observe the difference.
    """
    if _BELOW_AD_INPLACE_OR_VIEW is None:
        return contextlib.nullcontext()
    return _BELOW_AD_INPLACE_OR_VIEW()  # type: ignore[no-any-return]
