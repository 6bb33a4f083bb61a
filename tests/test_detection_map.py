"""Detection mAP against VadCLIP's own arithmetic on the real UCF-Crime and XD-Violence test annotations.

Reference: nwpu-zxr/VadCLIP @ f643c913, ``src/utils/ucf_detectionMAP.py`` / ``xd_detectionMAP.py``: ``getLocMAP``,
``nms``, ``str2ind``, ``getDetectionMAP``, transcribed below (``_vadclip_loc_map``) with two changes: the class list
is a parameter (the two files differ only there), and ``vid_pred_diff``'s list comprehension is ``np.diff`` of the
same float32 array (the same values; the loop takes minutes on 1.1M frames x 14 classes). The ground truth is built as
``list/make_gt_mAP_ucf.py`` / ``make_gt_mAP_xd.py`` build it from the shipped annotation files (normal videos: one
segment ``[0, 16 * snippets]`` labelled ``A``), predictions as ``src/ucf_test.py`` makes them: per-snippet class
softmax repeated 16 times.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from copra_bench.evaluation.detection import (
    IOU_THRESHOLDS,
    anomalous_runs,
    anomaly_detection_map,
    detection_map,
    nms,
)

UCF_CLASSES = ['Normal', 'Abuse', 'Arrest', 'Arson', 'Assault', 'Burglary', 'Explosion', 'Fighting', 'RoadAccidents',
               'Robbery', 'Shooting', 'Shoplifting', 'Stealing', 'Vandalism']
XD_CLASSES = ['A', 'B1', 'B2', 'B4', 'B5', 'B6', 'G']


def _vadclip_nms(dets, thresh=0.6, top_k=-1):
    if len(dets) == 0:
        return []
    order = np.arange(0, len(dets), 1)
    dets = np.array(dets)
    x1, x2 = dets[:, 0], dets[:, 1]
    lengths = x2 - x1
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        if len(keep) == top_k:
            break
        xx1 = np.maximum(x1[i], x1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1)
        ovr = inter / (lengths[i] + lengths[order[1:]] - inter)
        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]
    return dets[keep], keep


def _str2ind(categoryname, classlist):
    for i in range(len(classlist)):
        if categoryname == classlist[i]:
            return i


def _vadclip_loc_map(predictions, th, gtsegments, gtlabels, classlist):
    predictions_mod = []
    c_score = []
    for p in predictions:
        pp = - p
        [pp[:, i].sort() for i in range(np.shape(pp)[1])]
        pp = -pp
        c_s = np.mean(pp[:int(np.shape(pp)[0] / 16), :], axis=0)
        ind = c_s > 0.0
        c_score.append(c_s)
        predictions_mod.append(p * ind)
    predictions = predictions_mod
    ap = []
    for c in range(len(classlist)):
        segment_predict = []
        for i in range(len(predictions)):
            tmp = predictions[i][:, c]
            segment_predict_multithr = []
            thr_set = np.arange(0.6, 0.7, 0.1)
            for thr in thr_set:
                threshold = np.max(tmp) - (np.max(tmp) - np.min(tmp)) * thr
                vid_pred = np.concatenate([np.zeros(1), (tmp > threshold).astype('float32'), np.zeros(1)], axis=0)
                vid_pred_diff = np.diff(vid_pred)  # VadCLIP: [vid_pred[idt]-vid_pred[idt-1] for idt in ...]
                s = [idk for idk, item in enumerate(vid_pred_diff) if item == 1]
                e = [idk for idk, item in enumerate(vid_pred_diff) if item == -1]
                for j in range(len(s)):
                    if e[j] - s[j] >= 2:
                        segment_scores = np.max(tmp[s[j]:e[j]]) + 0.7 * c_score[i][c]
                        segment_predict_multithr.append([i, s[j], e[j], segment_scores])
            if len(segment_predict_multithr) != 0:
                segment_predict_multithr = np.array(segment_predict_multithr)
                segment_predict_multithr = segment_predict_multithr[np.argsort(-segment_predict_multithr[:, -1])]
                _, keep = _vadclip_nms(segment_predict_multithr[:, 1:-1], 0.6)
                segment_predict.extend(list(segment_predict_multithr[keep]))
        segment_predict = np.array(segment_predict)
        if len(segment_predict) == 0:
            return 0
        segment_predict = segment_predict[np.argsort(-segment_predict[:, 3])]
        segment_gt = [[i, gtsegments[i][j][0], gtsegments[i][j][1]] for i in range(len(gtsegments))
                      for j in range(len(gtsegments[i])) if _str2ind(gtlabels[i][j], classlist) == c]
        gtpos = len(segment_gt)
        tp, fp = [], []
        for i in range(len(segment_predict)):
            flag = 0.
            best_iou = 0.0
            for j in range(len(segment_gt)):
                if segment_predict[i][0] == segment_gt[j][0]:
                    gt = range(int(segment_gt[j][1]), int(segment_gt[j][2]))
                    p = range(int(segment_predict[i][1]), int(segment_predict[i][2]))
                    IoU = float(len(set(gt).intersection(set(p)))) / float(len(set(gt).union(set(p))))
                    if IoU >= th:
                        flag = 1.
                        if IoU > best_iou:
                            best_iou = IoU
                            best_j = j
            if flag > 0:
                del segment_gt[best_j]
            tp.append(flag)
            fp.append(1. - flag)
        tp_c = np.cumsum(tp)
        fp_c = np.cumsum(fp)
        prc = 0. if sum(tp) == 0 else np.sum((tp_c / (fp_c + tp_c)) * tp) / gtpos
        ap.append(prc)
    return 100 * np.mean(ap)


def _smooth_softmax(rng, snippets, classes):
    """Per-snippet class probabilities that drift slowly (a few proposals per video, like a trained model)."""
    logits = np.cumsum(rng.normal(scale=0.6, size=(snippets, classes)), axis=0)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.repeat((e / e.sum(axis=1, keepdims=True)).astype(np.float32), 16, 0)


def _ucf_gt(real_dir):
    """make_gt_mAP_ucf.py on the shipped files; snippets = frames // 16 (VadCLIP's feature count)."""
    lengths = {e["video"].rsplit("/", 1)[-1][:-4]: e["length"]
               for e in json.loads((real_dir / "ucf_crime" / "UCF_Eval.json").read_text())}
    lines = (real_dir / "ucf_crime" / "Temporal_Anomaly_Annotation.txt").read_text().splitlines()
    order = [line.split("/")[1][:-4] for line in (real_dir / "ucf_crime" / "Anomaly_Test.txt").read_text().split()]
    segments, labels, snippets = [], [], []
    for name in order:
        snippets.append(lengths[name] // 16)
        if name.startswith("Normal"):
            segments.append([[0, snippets[-1] * 16]])
            labels.append(["A"])
            continue
        content = next(line for line in lines if name in line).strip("\n").split("  ")
        seg, lab = [[content[2], content[3]]], [content[1]]
        if content[4] != "-1":
            seg.append([content[4], content[5]])
            lab.append(content[1])
        segments.append(seg)
        labels.append(lab)
    return segments, labels, snippets


@pytest.mark.slow
def test_multiclass_map_equals_vadclip_on_real_ucf_crime(real_dir):
    segments, labels, snippets = _ucf_gt(real_dir)
    assert len(segments) == 290 and sum(lab == ["A"] for lab in labels) == 150
    rng = np.random.default_rng(0)
    predictions = [_smooth_softmax(rng, s, len(UCF_CLASSES)) for s in snippets]
    int_segments = [[(int(s), int(e)) for s, e in video] for video in segments]
    ours = detection_map(predictions, int_segments, labels, UCF_CLASSES)
    for iou in (0.1, 0.5):
        reference = _vadclip_loc_map([p.copy() for p in predictions], iou, segments, labels, UCF_CLASSES)
        assert abs(100 * ours[iou] - reference) < 1e-9, iou
        assert reference > 0
    # VadCLIP's quirk, kept: its UCF normal videos are labelled 'A', its class list says 'Normal', so the normal
    # class never has a ground-truth segment and scores 0 (mAP <= 13/14)
    assert max(ours.values()) <= 13 / 14


def test_multiclass_map_equals_vadclip_on_real_xd_violence(real_dir):
    """make_gt_mAP_xd.py on the shipped annotations_multiclasses.txt, the first 120 violent and 60 normal videos."""
    videos = json.loads((real_dir / "xd_violence" / "xd_test_800.json").read_text())
    lines = (real_dir / "xd_violence" / "annotations_multiclasses.txt").read_text().splitlines()
    table = {line.split()[0].removesuffix(".mp4"): line.split() for line in lines}
    chosen = [v for v in videos if v["video"] in table][:120] + [v for v in videos if "label_A" in v["video"]][:60]
    rng = np.random.default_rng(1)
    segments, labels, predictions = [], [], []
    for v in chosen:
        snippets = v["length"] // 16
        predictions.append(_smooth_softmax(rng, snippets, len(XD_CLASSES)))
        if "_label_A" in v["video"]:
            segments.append([[0, snippets * 16]])
            labels.append(["A"])
        else:
            content = table[v["video"]]
            segments.append([[content[j + 1], content[j + 2]] for j in range(1, len(content), 3)])
            labels.append([content[j] for j in range(1, len(content), 3)])
    int_segments = [[(int(s), int(e)) for s, e in video] for video in segments]
    ours = detection_map(predictions, int_segments, labels, XD_CLASSES)
    for iou in IOU_THRESHOLDS:
        reference = _vadclip_loc_map([p.copy() for p in predictions], iou, segments, labels, XD_CLASSES)
        assert abs(100 * ours[iou] - reference) < 1e-9, iou
    assert ours[0.1] >= ours[0.5]


def test_class_agnostic_map_of_anomaly_scores_and_edge_cases():
    rng = np.random.default_rng(2)
    gts, scores = [], []
    for n in (40, 400, 900, 15):
        gt = np.zeros(n, np.uint8)
        if n > 100:
            gt[n // 4:n // 2] = 1
        gts.append(gt)
        scores.append(np.clip(0.6 * gt + 0.4 * np.convolve(rng.random(n), np.ones(9) / 9, "same"), 0, 1))
    ours = anomaly_detection_map(scores, gts)
    segments = [[list(r) for r in anomalous_runs(g)] for g in gts]
    for iou in IOU_THRESHOLDS:
        reference = _vadclip_loc_map([s[:, None] for s in scores], iou, segments,
                                     [["anomaly"] * len(s) for s in segments], ["anomaly"])
        assert abs(100 * ours[iou] - reference) < 1e-9
    assert anomalous_runs(np.array([1, 1, 0, 1, 0, 0, 1])) == [(0, 2), (3, 4), (6, 7)]
    # perfect scores find every event at every IoU; constant scores propose nothing (VadCLIP: 0)
    assert anomaly_detection_map([g.astype(float) for g in gts], gts)[0.5] == 1.0
    assert anomaly_detection_map([np.zeros(g.size) for g in gts], gts) == dict.fromkeys(IOU_THRESHOLDS, 0.0)
    dets = np.array([[0, 10], [1, 10], [20, 30]], dtype=float)
    assert nms(dets, 0.6) == [0, 2] == _vadclip_nms(dets, 0.6)[1]
