"""C-HMCNN's dense ``(N, C, C)`` formulation of the max-constraint module and MCLoss (Giunchiglia & Lukasiewicz,
2020, ``main.py`` of the authors' code), the baseline hierloss's level-wise propagation replaces.

The authors compute in float64 (``output.double()``); here the input dtype is kept so that time and memory are
compared like for like.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss import Hierarchy

__all__ = ["dense_bytes", "dense_constr_out", "dense_mcloss", "descendant_matrix"]


def descendant_matrix(hierarchy: Hierarchy, dtype: torch.dtype = torch.float32) -> Tensor:
    """C-HMCNN's ``R``: ``(C, C)``, ``R[i, j] = 1`` when ``j`` is ``i`` or a descendant of ``i``."""
    return (hierarchy.ancestor_matrix().t() | torch.eye(hierarchy.num_labels, dtype=torch.bool)).to(dtype)


def dense_constr_out(x: Tensor, r: Tensor) -> Tensor:
    """``get_constr_out``: each column becomes the max over its descendants, via an ``(N, C, C)`` product."""
    n, c = x.shape
    c_out = x.unsqueeze(1).expand(n, c, c)
    r_batch = r.unsqueeze(0).expand(n, c, c)
    return torch.max(r_batch * c_out, dim=2)[0]


def dense_mcloss(logits: Tensor, target: Tensor, r: Tensor) -> Tensor:
    """C-HMCNN's training loss (MCLoss): BCE on the max-constrained outputs, with the positives' branch
    constrained over the positive descendants only."""
    output = torch.sigmoid(logits)
    constr_output = dense_constr_out(output, r)
    train_output = dense_constr_out(target * output, r)
    train_output = (1 - target) * constr_output + target * train_output
    with torch.autocast(train_output.device.type, enabled=False):  # autocast refuses BCE on probabilities
        dtype = torch.promote_types(train_output.dtype, torch.float32)
        return F.binary_cross_entropy(train_output.to(dtype), target.to(dtype))


def dense_bytes(n: int, num_labels: int, element_size: int = 4) -> int:
    """Size of one ``(N, C, C)`` tensor (the dense form materialises at least one, two in the backward)."""
    return n * num_labels * num_labels * element_size
