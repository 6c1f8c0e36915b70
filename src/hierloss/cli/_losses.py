"""The losses ``hierloss demo`` can train, by name; kept apart from the training loop so that the command's
parser (and ``--help``) is built without importing torch."""

from __future__ import annotations

__all__ = ["COHERENT_BY_CONSTRUCTION", "DEFAULT_LOSSES", "LOSSES", "ZERO_GRADIENT_PENALTY"]

#: Training losses by name, with their display names.
LOSSES: dict[str, str] = {"bce": "BCE", "hbce": "HBCE", "hbce-hard": "HBCE hard", "mcloss": "MCLoss",
                          "hbce-hinge": "HBCE hinge λ=1", "conditional": "Conditional (chain rule)"}
#: The losses ``hierloss demo`` and ``compare_losses`` train unless told otherwise.
DEFAULT_LOSSES: tuple[str, ...] = ("bce", "hbce", "hbce-hard", "mcloss")
#: Losses whose reported value includes a penalty with zero gradient (the paper's indicator): the value can rise
#: while the model trains exactly as with BCE.
ZERO_GRADIENT_PENALTY: frozenset[str] = frozenset({"hbce-hard"})
#: Losses whose model predicts coherently by construction (MCLoss through the max-constraint module, conditional
#: training through the chain rule): scored on that output only, never again after ``coherent``.
COHERENT_BY_CONSTRUCTION: dict[str, str] = {"mcloss": "max-constraint", "conditional": "chain-rule"}
