"""Loss modules: each is a thin ``nn.Module`` whose ``forward`` calls its twin in :mod:`hierloss.functional`."""

from __future__ import annotations

__all__: list[str] = []
