"""Frame-level metrics of the field, computed over all test frames concatenated ("micro").

Conventions (recorded with every result):

* ``auc``: ROC-AUC of frame scores against frame labels (torchmetrics ``binary_auroc``, exact, equal to sklearn's
  ``roc_auc_score`` to 1e-6).
* ``ap``: step-wise average precision, ``sum_n (R_n - R_{n-1}) P_n`` (torchmetrics ``binary_average_precision``,
  equal to sklearn's ``average_precision_score``; the VadCLIP convention). XDVioDet / RTFM / VERA report the
  trapezoidal ``auc(recall, precision)`` instead; the full metric set comes with the evaluation protocol.

A test set whose frames are all of one class has no ROC curve: its AUC is reported as NaN with the reason,
never as 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

AP_CONVENTION = "step"  # sklearn.metrics.average_precision_score


@dataclass
class FrameMetrics:
    """Metrics of one test set (or one post-processing step of it)."""

    auc: float
    ap: float
    num_videos: int
    num_frames: int
    num_anomalous_frames: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {"auc": self.auc, "ap": self.ap, "num_videos": float(self.num_videos),
                "num_frames": float(self.num_frames), "num_anomalous_frames": float(self.num_anomalous_frames)}


def frame_metrics(scores: np.ndarray, gt: np.ndarray, *, num_videos: int = 1) -> FrameMetrics:
    """Micro frame AUC and AP of concatenated frame scores against 0/1 ground truth."""
    scores = np.asarray(scores, dtype=np.float64)
    gt = np.asarray(gt).astype(np.int64)
    if scores.shape != gt.shape:
        raise ValueError(f"{scores.shape[0]} scores for {gt.shape[0]} ground-truth frames")
    positives = int(gt.sum())
    notes = []
    if positives == 0 or positives == gt.size:
        only = "normal" if positives == 0 else "anomalous"
        notes.append(f"AUC and AP undefined: all {gt.size} frames are {only}")
        return FrameMetrics(float("nan"), float("nan"), num_videos, int(gt.size), positives, notes)
    preds, target = torch.from_numpy(scores), torch.from_numpy(gt)
    auc = float(binary_auroc(preds, target, thresholds=None))
    ap = float(binary_average_precision(preds, target, thresholds=None))
    return FrameMetrics(auc, ap, num_videos, int(gt.size), positives, notes)


def video_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Video-level ROC-AUC (validation on training videos, which have video labels only); NaN if one class."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.min(initial=1) == labels.max(initial=0) or labels.size == 0:
        return float("nan")
    return float(binary_auroc(torch.as_tensor(np.asarray(scores, dtype=np.float64)), torch.from_numpy(labels)))
