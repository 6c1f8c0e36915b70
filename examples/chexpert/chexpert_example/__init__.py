"""The CheXpert example of hierloss: DenseNet121 with hierarchical BCE, as in Asadi et al. (2025).

Modules (each one concept):

* :mod:`chexpert_example.labels` — CheXpert label CSVs, the uncertainty policy, the 21 targets and the edge
  penalties (pandas + hierloss only; no torchvision).
* :mod:`chexpert_example.layout` — the CheXpert-v1.0 / CheXpert-v1.0-small layouts, default CSVs, image paths.
* :mod:`chexpert_example.data` — the image ``Dataset`` and the input pipelines (torchvision).
* :mod:`chexpert_example.model` — DenseNet121 plus the reference's head, initialisation, local weights.
* :mod:`chexpert_example.criterion` — ``--loss`` names to hierloss losses.
* :mod:`chexpert_example.evaluation` — AUROC and violation rates, streamed through hierloss's DDP metrics.
* :mod:`chexpert_example.distributed` — the ``torchrun`` process group, evaluation shards.
* :mod:`chexpert_example.train_loop` — training, validation, the reference's callbacks, checkpoints.
* :mod:`chexpert_example.inference` — Monte Carlo dropout.
* :mod:`chexpert_example.calibration` — reliability bins and expected calibration error.
* :mod:`chexpert_example.predictions` — predictions CSVs (the reference's format) and matching them to labels.
* :mod:`chexpert_example.plots` — ROC curves and reliability diagrams.
* :mod:`chexpert_example.gradcam` — Grad-CAM heatmaps and PNG overlays.
* :mod:`chexpert_example.synthetic` — a tiny synthetic dataset in the real CheXpert layouts.

Importing this package imports nothing heavy; torchvision is needed by ``data``, ``model``, ``inference`` and
``gradcam`` only.
"""

from __future__ import annotations

__all__: list[str] = []
