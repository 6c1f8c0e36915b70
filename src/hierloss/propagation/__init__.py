"""The propagation engine: every level-wise operation over a hierarchy, in one place.

Four operations walk a hierarchy level by level, and every module that needs one calls this engine:

* :func:`max_over_descendants` — each label becomes the max over itself and all its descendants
  (:class:`~hierloss.layers.MaxConstraint`, ``coherent(method='max')``,
  :meth:`Hierarchy.propagate <hierloss.Hierarchy.propagate>`);
* :func:`min_over_ancestors` — each label becomes the min over itself and all its ancestors
  (``coherent(method='min')``);
* :func:`constrained_logits` — C-HMCNN's constrained logits, both of its maxima in one walk
  (:class:`~hierloss.losses.MCLoss`);
* :func:`chain_rule_log` — the chain rule's marginals from conditional logits, ``log P(c) = logσ(z_c) + min over
  parents p of log P(p)``, with ``log(1 − P(c))`` beside it (:class:`~hierloss.layers.ChainRule`), and
  :func:`chain_rule_bce`, the BCE of those marginals (:class:`~hierloss.losses.ChainRuleBCELoss`).

**Plans.** A :class:`LevelPlan` lists, level after level, the labels a level writes and for each the labels it
reads (itself and its children, itself and its parents, or its parents), padded to a ``(k, K)`` matrix per *group*:
a level's labels are split into groups of similar width, so padding stays small. Modules build the plan once and
keep it in buffers; the functional forms build it on first use for each hierarchy and reuse it (the arrays are
kept beside the hierarchy in a weak map, never on it).

**Cost.** The work runs labels-major (a ``(C, M)`` copy of the ``(M, C)`` input, ``M`` the rows): each group is one
gather of whole rows, one reduction and one row write, in place. Time and memory are ``O(M·(C + E))`` whatever the
depth: no ``(M, C)`` tensor is made per level, forward or backward. Each group costs a few small launches, so time
carries a fixed cost per level (measured in ``docs/benchmarks.md``). Nothing reads a value back to the host.

**Gradients** are written, not traced. The max and min keep, for each row and label, the index of the element that
attains the extremum (its *arg*), and the backward is one ``scatter_add``. **Ties:** the gradient of an output goes
to one element, the one with the smallest column index among those of the closure holding the extremum (where the
extremum is NaN, the smallest index among the closure's elements). The chain rule keeps, for each row and label,
the parent of smallest marginal (ties: the smallest column index) and its backward walks the levels back once,
adding each label's gradient into that parent's.

**Transforms.** Double backward works (the max's backward is a differentiable ``scatter_add``; the chain rule's
hands a gradient that must itself be differentiated to a plain-PyTorch reference along the same parents);
``torch.func.jvp`` has written forward-mode rules; ``torch.func.vmap`` runs a batch as extra rows; under
``torch.compile`` the walks are custom operators (the compiled graph calls the eager kernels: no graph break, no
unrolled levels), and :class:`~hierloss.losses.MCLoss` and :class:`~hierloss.losses.ChainRuleBCELoss` one operator
each, masks, BCE and reduction included, so a compiled step runs no slower than an eager one on the CPU; under
``torch.export`` (ONNX) inference they are traced as plain gathers and reductions.
"""

from hierloss.propagation._api import *  # noqa: F403
from hierloss.propagation._api import __all__ as __all__  # the public list is declared once, in _api
