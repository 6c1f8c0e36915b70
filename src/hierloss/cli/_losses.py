"""The losses ``hierloss demo`` can train, by name; kept apart from the training loop so that the command's
parser (and ``--help``) is built without importing torch."""

from __future__ import annotations

__all__ = ["COHERENT_BY_CONSTRUCTION", "DEFAULT_LOSSES", "FINE_TUNE_SHARE", "LOSSES", "ZERO_GRADIENT_PENALTY",
           "fine_tune_epochs"]

#: Training losses by name, with their display names.
LOSSES: dict[str, str] = {"bce": "BCE", "hbce": "HBCE", "hbce-hard": "HBCE hard", "mcloss": "MCLoss",
                          "hbce-hinge": "HBCE hinge λ=1", "conditional": "Conditional (chain rule)",
                          "conditional-ft": "Conditional + fine-tuning (chain rule)"}
#: The losses ``hierloss demo`` and ``compare_losses`` train unless told otherwise.
DEFAULT_LOSSES: tuple[str, ...] = ("bce", "hbce", "hbce-hard", "mcloss")
#: Losses whose reported value includes a penalty with zero gradient (the paper's indicator): the value can rise
#: while the model trains exactly as with BCE.
ZERO_GRADIENT_PENALTY: frozenset[str] = frozenset({"hbce-hard"})
#: Losses whose model predicts coherently by construction (MCLoss through the max-constraint module, conditional
#: training, with or without fine-tuning, through the chain rule): scored on that output only, never again after
#: ``coherent``.
COHERENT_BY_CONSTRUCTION: dict[str, str] = {"mcloss": "max-constraint", "conditional": "chain-rule",
                                            "conditional-ft": "chain-rule"}
#: ``conditional-ft``: the share of the epochs, at the end, that fine-tunes on the chain rule's marginals
#: (``ChainRuleBCELoss``) after conditional training (``ConditionalBCELoss``); see ``fine_tune_epochs``.
FINE_TUNE_SHARE = 0.2


def fine_tune_epochs(epochs: int) -> int:
    """How many of ``epochs`` ``conditional-ft`` spends fine-tuning: a fifth, rounded, at least one, and at least one
    conditional epoch before it (so none of a single epoch)."""
    return max(0, min(max(1, round(FINE_TUNE_SHARE * epochs)), epochs - 1))
