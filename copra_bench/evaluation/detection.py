"""Detection mAP at temporal IoU 0.1..0.5, VadCLIP's ``getDetectionMAP`` (nwpu-zxr/VadCLIP
``src/utils/ucf_detectionMAP.py`` and ``xd_detectionMAP.py``, identical apart from the class list), same arithmetic.

Per video and class, with ``p`` the frame-level class scores:

1. class score ``c = mean of the top int(T / 16) frame scores``; a class with ``c <= 0`` is zeroed for the video;
2. proposals: maximal runs of frames scored above ``max - 0.6 (max - min)``, at least 2 frames long, each scored
   ``max(p over the run) + 0.7 c``; per video sorted by score and suppressed at IoU 0.6 (VadCLIP's ``nms``);
3. all videos' proposals sorted by score; each takes the ground-truth segment of its video with the highest IoU
   ``>= th`` not taken yet (a hit), else is a false positive; ``AP = sum(precision at each hit) / #gt segments``;
4. mAP = mean over the classes of AP (VadCLIP prints it x100; here a fraction, like AUC and AP). As in VadCLIP, a
   threshold where some class has no proposal at all gives 0 for every class.

Orderings use numpy's default ``argsort`` on the same arrays as VadCLIP (not a stable sort), so tied proposal scores
are ordered as VadCLIP orders them with the same numpy. IoU of integer frame ranges is computed from the ends instead
of Python sets (the same number).

Methods that score "anomaly" only are evaluated class-agnostically (:func:`anomaly_detection_map`): one class, its
ground-truth segments the maximal runs of anomalous frames, proposals from the frame scores of every test video
(those on normal videos can only be false positives).
"""

from __future__ import annotations

import warnings

import numpy as np

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
_RELATIVE_THRESHOLD = np.arange(0.6, 0.7, 0.1)  # VadCLIP's thr_set: the one value 0.6


def nms(dets: np.ndarray, thresh: float = 0.6) -> list[int]:
    """VadCLIP's ``nms`` on ``[N, 2]`` (start, end) proposals sorted by score: indices kept."""
    order = np.arange(len(dets))
    x1, x2 = dets[:, 0], dets[:, 1]
    lengths = x2 - x1
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        inter = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]))
        overlap = inter / (lengths[i] + lengths[order[1:]] - inter)
        order = order[np.where(overlap <= thresh)[0] + 1]
    return keep


def _class_scores(predictions: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    masked, c_scores = [], []
    for p in predictions:
        ranked = -np.sort(-p, axis=0)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a video under 16 frames: mean of nothing (NaN)
            c_s = np.mean(ranked[:int(np.shape(ranked)[0] / 16), :], axis=0)
        c_scores.append(c_s)
        masked.append(p * (c_s > 0.0))
    return masked, c_scores


def _proposals(predictions: list[np.ndarray], c_scores: list[np.ndarray], c: int) -> np.ndarray:
    """``[N, 4]`` (video, start, end, score) proposals of class ``c`` after per-video NMS, VadCLIP's order."""
    found = []
    for i, pred in enumerate(predictions):
        tmp = pred[:, c]
        per_video = []
        if tmp.size:
            for thr in _RELATIVE_THRESHOLD:
                threshold = np.max(tmp) - (np.max(tmp) - np.min(tmp)) * thr
                marks = np.concatenate([np.zeros(1), (tmp > threshold).astype("float32"), np.zeros(1)], axis=0)
                diff = marks[1:] - marks[:-1]
                starts, ends = np.flatnonzero(diff == 1), np.flatnonzero(diff == -1)
                per_video += [[i, s, e, np.max(tmp[s:e]) + 0.7 * c_scores[i][c]]
                              for s, e in zip(starts.tolist(), ends.tolist()) if e - s >= 2]
        if per_video:
            rows = np.array(per_video)
            rows = rows[np.argsort(-rows[:, -1])]
            found.extend(list(rows[nms(rows[:, 1:-1], 0.6)]))
    return np.array(found)


def _class_ap(proposals: np.ndarray, remaining: dict[int, list[tuple[int, int]]], iou: float) -> float:
    """AP of one class: proposals in descending score order take their video's best unmatched segment."""
    remaining = {video: list(segments) for video, segments in remaining.items()}
    positives = sum(len(v) for v in remaining.values())
    tp = np.zeros(len(proposals))
    for k, (video, start, end, _) in enumerate(proposals):
        candidates = remaining.get(int(video), [])
        if not candidates:
            continue
        bounds = np.array(candidates, dtype=np.int64)
        s, e = int(start), int(end)
        inter = np.maximum(0, np.minimum(bounds[:, 1], e) - np.maximum(bounds[:, 0], s))
        overlap = inter / (np.maximum(bounds[:, 1] - bounds[:, 0], 0) + max(e - s, 0) - inter)
        hits = overlap >= iou
        if hits.any():
            del candidates[int(np.argmax(np.where(hits, overlap, -1.0)))]  # the first of the best, as VadCLIP
            tp[k] = 1.0
    fp = 1.0 - tp
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    return 0.0 if tp.sum() == 0 else float(np.sum((tp_c / (fp_c + tp_c)) * tp) / positives)


def detection_map(predictions: list[np.ndarray], gt_segments: list[list[tuple[int, int]]],
                  gt_labels: list[list[str]], classes: list[str],
                  ious: tuple[float, ...] = IOU_THRESHOLDS) -> dict[float, float]:
    """VadCLIP's ``getDetectionMAP`` (``getLocMAP`` per threshold, ``excludeNormal=False``): ``{iou: mAP}``.

    Args:
        predictions: Per video, ``[T, C]`` frame-level scores of the ``C`` classes.
        gt_segments: Per video, its ground-truth ``(start, end)`` frame segments (end exclusive).
        gt_labels: Per video, the class name of each segment (a name outside ``classes`` matches no class, as
            VadCLIP's UCF-Crime normal videos labelled ``A`` against the class ``Normal``).
        classes: The class names, in the column order of ``predictions``.
    """
    masked, c_scores = _class_scores(predictions)
    per_class = []
    for c, name in enumerate(classes):
        proposals = _proposals(masked, c_scores, c)
        if len(proposals) == 0:  # VadCLIP returns 0 for the threshold at the first class without a proposal
            return dict.fromkeys(ious, 0.0)
        remaining: dict[int, list[tuple[int, int]]] = {}
        for i, (segments, labels) in enumerate(zip(gt_segments, gt_labels, strict=True)):
            for (s, e), label in zip(segments, labels, strict=True):
                if label == name:
                    remaining.setdefault(i, []).append((int(s), int(e)))
        per_class.append((proposals[np.argsort(-proposals[:, 3])], remaining))
    return {iou: float(np.mean([_class_ap(p, r, iou) for p, r in per_class])) for iou in ious}


def location_ap(predictions: list[np.ndarray], gt_segments: list[list[tuple[int, int]]],
                gt_labels: list[list[str]], classes: list[str], iou: float) -> float:
    """VadCLIP's ``getLocMAP`` at one IoU threshold, as a fraction (VadCLIP: x100)."""
    return detection_map(predictions, gt_segments, gt_labels, classes, (iou,))[iou]


def anomalous_runs(gt: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of anomalous frames of a 0/1 ground truth, as ``(start, end)`` (end exclusive)."""
    marks = np.concatenate([[0], (np.asarray(gt) > 0).astype(np.int8), [0]])
    diff = np.diff(marks)
    return list(zip(np.flatnonzero(diff == 1).tolist(), np.flatnonzero(diff == -1).tolist()))


def anomaly_detection_map(frame_scores: list[np.ndarray], gts: list[np.ndarray],
                          ious: tuple[float, ...] = IOU_THRESHOLDS) -> dict[float, float]:
    """Class-agnostic detection mAP of anomaly scores (one class, ``anomaly``), VadCLIP's arithmetic."""
    predictions = [np.asarray(s, dtype=np.float64)[:, None] for s in frame_scores]
    segments = [anomalous_runs(gt) for gt in gts]
    labels = [["anomaly"] * len(s) for s in segments]
    return detection_map(predictions, segments, labels, ["anomaly"], ious)
