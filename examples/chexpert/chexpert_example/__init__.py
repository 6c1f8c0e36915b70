"""The CheXpert example of hierloss: DenseNet121 with hierarchical BCE, as in Asadi et al. (2025).

Modules (each one concept):

* :mod:`chexpert_example.labels` — CheXpert label CSVs, the uncertainty policy, the 21 targets and the edge
  penalties (pandas + hierloss only; no torchvision).
* :mod:`chexpert_example.data` — the image ``Dataset`` and the augmentations (torchvision).
* :mod:`chexpert_example.model` — DenseNet121 features plus the paper's head.
* :mod:`chexpert_example.criterion` — ``--loss`` names to hierloss losses.
* :mod:`chexpert_example.evaluation` — weighted AUROC and violation rate.
* :mod:`chexpert_example.train_loop` — training, validation, early stopping, checkpoints.
* :mod:`chexpert_example.inference` — Monte Carlo dropout.
* :mod:`chexpert_example.gradcam` — Grad-CAM heatmaps and PNG overlays.
* :mod:`chexpert_example.synthetic` — a tiny synthetic dataset in the real CheXpert layout.

Importing this package imports nothing heavy; torchvision is needed by ``data`` and ``model`` only.
"""

from __future__ import annotations

__all__: list[str] = []
