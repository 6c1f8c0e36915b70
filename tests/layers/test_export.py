"""Deployment: a trained network with its prediction head (MaxConstraint, ChainRule, coherent) exports with
torch.export and to ONNX, and the exported model gives PyTorch's scores (run with onnxruntime)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from hierloss import ChainRule, Hierarchy, MaxConstraint
from hierloss.metrics import coherent

H = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "e": ["g"], "f": []})


class _Coherent(nn.Module):
    """A head that calls the functional projection."""

    def forward(self, probs: Tensor) -> Tensor:
        return coherent(probs, H)  # type: ignore[no-any-return]


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "MaxConstraint": nn.Sequential(nn.Linear(8, H.num_labels), nn.Sigmoid(), MaxConstraint(H)).eval(),
        "ChainRule": nn.Sequential(nn.Linear(8, H.num_labels), ChainRule(H)).eval(),
        "coherent": nn.Sequential(nn.Linear(8, H.num_labels), nn.Sigmoid(), _Coherent()).eval(),
    }


@pytest.mark.parametrize("name", ["MaxConstraint", "ChainRule", "coherent"])
def test_torch_export_matches_eager(name: str) -> None:
    """torch.export with a dynamic batch gives the eager scores at another batch size, and they stay coherent."""
    model = _models()[name]
    exported = torch.export.export(model, (torch.randn(4, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    x = torch.randn(9, 8)
    out = exported.module()(x)
    torch.testing.assert_close(out, model(x))
    for p, c in H.edge_indices:
        assert bool((out[:, p] >= out[:, c]).all())


@pytest.mark.parametrize("name", ["MaxConstraint", "ChainRule", "coherent"])
def test_onnx_export_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    """The ONNX export (dynamo exporter, dynamic batch) run by onnxruntime gives PyTorch's scores."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _models()[name]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(4, 8),), dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        program.save(str(path))
    session = onnxruntime.InferenceSession(str(path))
    x = torch.randn(7, 8)
    scores = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(scores, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_export_traces_plain_operations() -> None:
    """The exported graph holds no custom operator of hierloss: any runtime can run it."""
    for model in _models().values():
        exported = torch.export.export(model, (torch.randn(4, 8),))
        targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
        assert not any("hierloss" in t for t in targets), targets
