"""The XD-Violence reader on the real temporal annotation (shipped in datamodules/annotations/xd_violence)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from copra_bench.datamodules.records import intervals_to_gt
from copra_bench.datamodules.xd_violence import XD_CODES, label_codes, parse_annotations
from copra_bench.errors import DataError


@pytest.fixture(scope="module")
def xd(real_dir):
    root = real_dir / "xd_violence"
    videos = json.loads((root / "xd_test_800.json").read_text())
    return root, {v["video"]: v["length"] for v in videos}


def _independent_count(path, lengths, inclusive):
    """Totals written without the project's parser: split(), strip '.mp4' by hand, clip to the true length."""
    annotated = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        name = fields[0].removesuffix(".mp4")
        annotated[name] = list(map(int, fields[1:]))
    total = anomalous = 0
    for name, n in lengths.items():
        mask = np.zeros(n, bool)
        bounds = annotated.get(name, [])
        for s, e in zip(bounds[0::2], bounds[1::2]):
            mask[s:min(e + inclusive, n)] = True
        total += n
        anomalous += int(mask.sum())
    return total, anomalous


@pytest.mark.parametrize("inclusive", [False, True])
def test_full_size_test_gt_totals(xd, inclusive):
    root, lengths = xd
    path = root / "annotations.txt"
    table = parse_annotations(path)
    assert len(table) == 500 and set(table) <= set(lengths) and len(lengths) == 800
    gts = {name: intervals_to_gt(table.get(name, []), n, end_inclusive=inclusive, video=name)
           for name, n in lengths.items()}
    total = sum(g.size for g in gts.values())
    anomalous = sum(int(g.sum()) for g in gts.values())
    assert (total, anomalous) == _independent_count(path, lengths, inclusive)
    assert sum(bool(g.any()) for g in gts.values()) == 500
    assert total == 2_335_801 and anomalous == (539_562 if inclusive else 538_324)


def test_stem_matching_recovers_the_14_names_with_mp4(xd):
    root, _ = xd
    raw = [line.split()[0] for line in (root / "annotations.txt").read_text().splitlines()]
    with_suffix = [n[:-4] for n in raw if n.endswith(".mp4")]
    assert len(with_suffix) == 14 and all(n in parse_annotations(root / "annotations.txt") for n in with_suffix)
    # VERA's list matched literally and lost them: labelled normal, no interval (486 violent instead of 500)
    vera = {v["video"]: v for v in json.loads((root / "xd_test_800.json").read_text())}
    assert all(vera[n]["temporal_label"] in ([], [-1, -1]) or not any(x >= 0 for x in vera[n]["temporal_label"])
               for n in with_suffix)


def test_label_codes_agree_with_the_annotation(xd):
    root, lengths = xd
    table = parse_annotations(root / "annotations.txt")
    codes = {name: label_codes(name) for name in lengths}
    assert all(set(c) <= set(XD_CODES) for c in codes.values())
    violent = {n for n, c in codes.items() if c != ("A",)}
    assert violent == set(table) and len(lengths) - len(violent) == 300
    assert label_codes("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6") == ("G", "B2", "B6")
    assert label_codes("v=S-7rRLrxnVQ__#1_label_B4-0-0.mp4") == ("B4",)


def test_malformed_annotation_names_file_and_line(tmp_path):
    bad = tmp_path / "annotations.txt"
    bad.write_text("a__#1_label_B1-0-0 1 5\nb__#1_label_B1-0-0 3 9 12\n")
    with pytest.raises(DataError, match=r"annotations.txt, line 2: expected 'name s1 e1"):
        parse_annotations(bad)
    bad.write_text("a__#1_label_B1-0-0 1 x\n")
    with pytest.raises(DataError, match=r"line 1: frame numbers must be integers"):
        parse_annotations(bad)
    with pytest.raises(DataError, match="no '_label_"):
        label_codes("some_video")
