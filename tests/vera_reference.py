"""VERA's three evaluation scripts (vera-framework/VERA @ fd17c0ff: ``compute_auc.py``, ``compute_auc_XD_Violence.py``,
``compute_AP_XD_Violence.py``), transcribed line by line for the tests, minus file handling: one video's window
scores and features in, its frame scores and ground truth out, then the scripts' sklearn calls on all videos.

Kept from the scripts: ``gaussian_kernel``, ``gaussian_smooth_1d``, ``softmax``, ``gaussian_smoothing`` (the position
weighting), the ``top_n`` rules, ``np.argsort(v_array, axis=1)[:, -top_n:]``, the per-window ``np.dot`` of the softmax
weights with the neighbours' scores, ``round(v, 1)``, the sigmoid and the XD AP script's cut (``pred_score[:-1]`` then
``[:-mod]``, ``mod = (len - 1) % 16``). Replaced: the list building of neighbour scores by indexing (same values), the
AP script's per-frame ``round(num, 1)`` on numpy scalars by ``np.round`` on the array (numpy's scalar ``__round__`` is
that same call on a 0-d array: bit for bit equal, 20x faster on 2.3M frames), and ``name_gt_pair.json`` (not published
in the repository: a large file) by the same ground truth cut exactly as the script cuts its predictions (the two have
to be of equal length in the script).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_curve


def gaussian_kernel_original(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def gaussian_smoothing(data, sigma):
    n = len(data)
    x = np.arange(n)
    centroid_index = int(n / 2)
    kernel_values = gaussian_kernel_original(x, centroid_index, sigma)
    return kernel_values * data


def gaussian_kernel(size, sigma):
    kernel = np.exp(-np.linspace(-size // 2, size // 2, size) ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def gaussian_smooth_1d(data, size=5, sigma=1.0):
    return np.convolve(data, gaussian_kernel(size, sigma), mode="same")


def softmax(row_vector):
    exp_row = np.exp(row_vector - np.max(row_vector))
    return exp_row / np.sum(exp_row)


def vera_gt(temporal_label, length):
    """The scripts' ground truth from a json entry (``temporal_label`` pairs, -1 = none, ends clipped)."""
    gt = [0.0] * length
    for anno_i in range(0, len(temporal_label), 2):
        if temporal_label[anno_i] != -1:
            anno_s = temporal_label[anno_i]
            anno_e = min(temporal_label[anno_i + 1], length)
            gt[anno_s:anno_e] = [1.0] * (anno_e - anno_s)
    return gt


_REFINED: dict[tuple[int, int], list] = {}  # the XD scripts share Step 2 wherever their top_n agree


def _refined(all_score, v_array, top_n):
    """Step 2 as the scripts write it (``v_array`` the raw features)."""
    key = (id(v_array), top_n)
    if key not in _REFINED:
        _REFINED[key] = _step2(all_score, v_array, top_n)
    return _REFINED[key]


def _step2(all_score, v_array, top_n):
    v_norms = np.linalg.norm(v_array, axis=1, keepdims=True)
    normalized_v = v_array / v_norms
    v_array = np.dot(normalized_v, normalized_v.T)
    v_indices = argsort_tail(v_array, top_n)
    v_top_values = np.take_along_axis(v_array, v_indices, axis=1)
    scores = np.asarray(all_score)
    return [np.dot(softmax(v_top_values[i] * 10), scores[v_indices[i]]) for i in range(len(all_score))]


def argsort_tail(v_array, top_n):
    """``np.argsort(v_array, axis=1)[:, -top_n:]``, VERA's choice of neighbours, by a partition where every row has a
    strict gap at the cut (then the chosen set is the same whatever the sort algorithm; the order inside it, which
    only orders the terms of the weighted sum, is ascending with exact ties in index order); otherwise by the
    scripts' own call on those rows."""
    n = v_array.shape[1]
    if top_n <= 0 or top_n >= n:
        return np.argsort(v_array, axis=1)[:, -top_n:]
    part = np.argpartition(v_array, n - top_n - 1, axis=1)[:, n - top_n - 1:]
    values = np.take_along_axis(v_array, part, axis=1)
    top, top_values = part[:, 1:], values[:, 1:]
    out = np.take_along_axis(top, np.lexsort((top, top_values), axis=1), axis=1)
    tied = np.flatnonzero(top_values.min(axis=1) <= values[:, 0])
    out[tied] = np.argsort(v_array[tied], axis=1)[:, -top_n:]  # row by row, as the script's call on the matrix
    return out


def _spread(smoothed_data, num_windows, n_frames, rounded):
    """The scripts' loop over the windows (``start_index``): numpy's ``same`` output may be longer (short videos)."""
    pred_score = []
    for i in range(num_windows):
        segment_score = round(smoothed_data[i], 1) if rounded else smoothed_data[i]
        num_ele = 16 if i != num_windows - 1 else int(n_frames - 16 * i)
        pred_score.extend([segment_score] * num_ele)
    return pred_score


def compute_auc_video(all_score, features, n_frames):
    """compute_auc.py (UCF-Crime), one video: frame scores."""
    top_n = int(0.15 * features.shape[0])
    smoothed = gaussian_smooth_1d(np.array(_refined(all_score, features, top_n)), 15, 10)
    pred_score = _spread(smoothed, len(all_score), n_frames, rounded=True)
    return gaussian_smoothing(np.array(pred_score), int(len(pred_score) / 2))


def compute_auc_xd_video(all_score, features, n_frames):
    """compute_auc_XD_Violence.py, one video: frame scores (all windows vote up to 10 windows)."""
    num_segment = len(all_score)
    top_n = int(0.15 * num_segment) if num_segment > 10 else num_segment
    smoothed = gaussian_smooth_1d(np.array(_refined(all_score, features, top_n)), 15, 10)
    pred_score = _spread(smoothed, len(all_score), n_frames, rounded=True)
    return gaussian_smoothing(np.array(pred_score), int(len(pred_score) / 2))


def compute_ap_xd_video(all_score, features, n_frames, gt):
    """compute_AP_XD_Violence.py, one video: (frame scores, ground truth), both cut to 16-frame snippets."""
    num_segment = len(all_score)
    top_n = int(0.15 * num_segment) if num_segment > 4 else num_segment
    smoothed = gaussian_smooth_1d(np.array(_refined(all_score, features, top_n)), 15, 10)
    pred_score = _spread(smoothed, len(all_score), n_frames, rounded=False)
    pred_score = 1 / (1 + np.exp(-np.array(pred_score)))
    pred_score = list(np.round(pred_score, 1))  # the script's [round(num, 1) for num in pred_score], at numpy speed
    lens = len(pred_score)
    mod = (lens - 1) % 16
    pred_score, gt = pred_score[:-1], gt[:-1]
    if mod:
        pred_score, gt = pred_score[:-mod], gt[:-mod]
    return pred_score, gt


def script_auc(all_gt, all_predict_score):
    fpr, tpr, _ = roc_curve(all_gt, all_predict_score)
    return auc(fpr, tpr)


def script_ap(all_gt, all_predict_score):
    precision, recall, _ = precision_recall_curve(all_gt, all_predict_score)
    return auc(recall, precision)
