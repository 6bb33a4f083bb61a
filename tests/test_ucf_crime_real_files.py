"""The UCF-Crime reader on the real split lists and temporal annotation (shipped: datamodules/annotations/ucf_crime)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from copra_bench.datamodules.records import intervals_to_gt
from copra_bench.datamodules.ucf_crime import UCF_CLASSES, parse_split, parse_temporal_annotation
from copra_bench.errors import DataError


@pytest.fixture(scope="module")
def ucf(real_dir):
    root = real_dir / "ucf_crime"
    lengths = {e["video"].rsplit("/", 1)[-1][:-4]: e["length"]
               for e in json.loads((root / "UCF_Eval.json").read_text())}
    return root, lengths


def test_official_splits_parse_at_full_size(ucf):
    root, _ = ucf
    train = parse_split(root / "Anomaly_Train.txt")
    test = parse_split(root / "Anomaly_Test.txt")
    assert len(train) == 1610 and sum(c != "Normal" for _, c in train) == 810
    assert len(test) == 290 and sum(c != "Normal" for _, c in test) == 140
    assert {c for _, c in train} == set(UCF_CLASSES) | {"Normal"}
    assert ("Normal_Videos_003_x264", "Normal") in test and ("Abuse028_x264", "Abuse") in test
    assert len({s for s, _ in train} & {s for s, _ in test}) == 0


def _independent_count(path, lengths, inclusive):
    """Frame totals written without the project's parser: split(), -1 skip, clip to the true length."""
    total = anomalous = 0
    for line in path.read_text().splitlines():
        f = line.split()
        n = lengths[f[0].replace(".mp4", "")]
        b = list(map(int, f[2:]))
        mask = np.zeros(n, bool)
        for s, e in ((b[0], b[1]), (b[2], b[3])):
            if s != -1:
                mask[s:min(e + inclusive, n)] = True
        total += n
        anomalous += int(mask.sum())
    return total, anomalous


@pytest.mark.parametrize("inclusive", [False, True])
def test_full_size_test_gt_totals(ucf, inclusive):
    root, lengths = ucf
    path = root / "Temporal_Anomaly_Annotation.txt"
    table = parse_temporal_annotation(path)
    stems = [s for s, _ in parse_split(root / "Anomaly_Test.txt")]
    assert set(table) == set(stems) and len(table) == 290
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gts = {s: intervals_to_gt(table[s][1], lengths[s], end_inclusive=inclusive, video=s) for s in stems}
    total = sum(g.size for g in gts.values())
    anomalous = sum(int(g.sum()) for g in gts.values())
    assert (total, anomalous) == _independent_count(path, lengths, inclusive)
    assert total == 1_111_808
    assert anomalous == (84_331 if inclusive else 84_182)
    assert all(gts[s].sum() == 0 for s in stems if s.startswith("Normal"))
    # The five official intervals that end past the true frame count are clipped, with a warning naming the video
    clipped = {str(w.message).split(":")[0] for w in caught}
    assert {"Arson011_x264", "Arson016_x264", "Explosion033_x264", "Fighting003_x264",
            "Shooting015_x264"} <= clipped


def test_vera_json_is_a_different_ground_truth(ucf):
    root, _ = ucf
    official = parse_temporal_annotation(root / "Temporal_Anomaly_Annotation.txt")
    vera = {e["video"].rsplit("/", 1)[-1][:-4]: e["temporal_label"]
            for e in json.loads((root / "UCF_Eval.json").read_text())}
    differ = [s for s, (_, ev) in official.items()
              if [x for pair in ev for x in pair] != [v for v in vera[s] if v != -1]]
    assert len(differ) == 14 and "Burglary076_x264" in differ
    assert official["Burglary076_x264"][1] == [(1590, 4300)]


def test_malformed_annotation_names_file_and_line(tmp_path):
    bad = tmp_path / "ann.txt"
    bad.write_text("Abuse028_x264.mp4  Abuse  165  240  -1  -1\nAbuse030_x264.mp4  Abuse  1275\n")
    with pytest.raises(DataError, match=r"ann.txt, line 2: expected 6 fields"):
        parse_temporal_annotation(bad)
    bad.write_text("Abuse028_x264.mp4  Abuse  165  abc  -1  -1\n")
    with pytest.raises(DataError, match=r"line 1: frame numbers must be integers"):
        parse_temporal_annotation(bad)
    split = tmp_path / "split.txt"
    split.write_text("Abuse/Abuse001_x264.mp4\nNotAClass/X001_x264.mp4\n")
    with pytest.raises(DataError, match=r"split.txt, line 2: unknown UCF-Crime class 'NotAClass'"):
        parse_split(split)


def test_gt_end_convention():
    assert intervals_to_gt([(2, 4)], 6).tolist() == [0, 0, 1, 1, 0, 0]
    assert intervals_to_gt([(2, 4)], 6, end_inclusive=True).tolist() == [0, 0, 1, 1, 1, 0]
    with pytest.warns(UserWarning, match="vid: annotated interval"):
        assert intervals_to_gt([(4, 9)], 6, video="vid").tolist() == [0, 0, 0, 0, 1, 1]
