"""Run artifacts for the eye: ROC and PR curves per step, score timelines against the ground truth.

Written with matplotlib's Agg backend (no display needed) to ``<run dir>/plots/<test set>/``:
``curves.png`` (ROC and PR of each step, micro over all frames) and ``timelines.png`` (frame scores of every step
against the ground truth for a few videos per class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.protocol import NORMAL_CLASSES, TestSetEvaluation

#: Points drawn per curve at most (curves of a million frames are thinned, their end points kept).
MAX_CURVE_POINTS = 2000


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, MAX_CURVE_POINTS).astype(np.int64))
    return x[keep], y[keep]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(evaluation: TestSetEvaluation, videos: list[VideoScores], path: Path) -> Path | None:
    """ROC and PR curves of every step that has scores; None when the test set has one class only."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    gt = np.concatenate([v.gt for v in videos])
    if gt.min() == gt.max():
        return None
    plt = _pyplot()
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for step, scores in evaluation.frame_scores.items():
        if scores is None:
            continue
        values = np.concatenate(scores)
        m = evaluation.steps[step].values
        fpr, tpr, _ = roc_curve(gt, values)
        roc_ax.plot(*_thin(fpr, tpr), label=f"{step} AUC {100 * m['auc']:.2f}")
        precision, recall, _ = precision_recall_curve(gt, values)
        pr_ax.plot(*_thin(recall[::-1], precision[::-1]),
                   label=f"{step} AP {100 * m['ap']:.2f} ({evaluation.ap_primary})")
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{evaluation.name}: ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"{evaluation.name}: precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def timeline_videos(videos: list[VideoScores], per_class: int = 2) -> list[int]:
    """Indices of the first ``per_class`` videos of each class (normal videos as one class)."""
    chosen: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        named = [c for c in v.classes if c not in NORMAL_CLASSES]
        key = named[0] if (v.label == 1 and named) else ("abnormal" if v.label == 1 else "normal")
        if len(chosen.setdefault(key, [])) < per_class:
            chosen[key].append(i)
    return [i for key in sorted(chosen) for i in chosen[key]]


def plot_timelines(evaluation: TestSetEvaluation, videos: list[VideoScores], path: Path, *,
                   per_class: int = 2, max_videos: int = 16) -> Path:
    """Frame scores of each step against the ground truth (shaded) for a few videos per class."""
    plt = _pyplot()
    picked = timeline_videos(videos, per_class)[:max_videos]
    fig, axes = plt.subplots(len(picked), 1, figsize=(10, 1.6 * len(picked)), squeeze=False)
    for ax, i in zip(axes[:, 0], picked, strict=True):
        v = videos[i]
        frames = np.arange(v.gt.shape[0])
        ax.fill_between(frames, 0, v.gt.astype(float), color="red", alpha=0.15, step="post", label="ground truth")
        for step, scores in evaluation.frame_scores.items():
            if scores is not None:
                ax.plot(frames, scores[i], lw=1, label=step)
        ax.set_ylabel(v.name[:18], fontsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(f"{evaluation.name}: frame scores per step ({evaluation.settings.postprocess})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_plots(folder: Path, evaluation: TestSetEvaluation, videos: list[VideoScores]) -> list[Path]:
    """Both figures of one test set in ``folder``; returns the files written."""
    written = [plot_curves(evaluation, videos, folder / "curves.png"),
               plot_timelines(evaluation, videos, folder / "timelines.png")]
    return [p for p in written if p is not None]
