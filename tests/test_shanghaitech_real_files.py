"""The ShanghaiTech reader on the real split lists and frame masks (shipped in datamodules/annotations/shanghaitech)."""

from __future__ import annotations

import numpy as np
import pytest

from copra_bench.datamodules.shanghaitech import (
    TEST_PART_NAME, load_mask, mask_to_gt, parse_split_list,
)
from copra_bench.errors import DataError


@pytest.fixture(scope="module")
def sh(real_dir):
    return real_dir / "shanghaitech"


def test_weakly_supervised_split_sizes_and_labels(sh):
    masks = sh / "test_frame_mask"
    for split, size, abnormal in (("SH_Train.txt", 238, 63), ("SH_Test.txt", 199, 44)):
        names = parse_split_list(sh / split)
        labels = [int(load_mask(masks / f"{n}.npy").any()) if (masks / f"{n}.npy").is_file() else 0 for n in names]
        assert len(names) == len(set(names)) == size and sum(labels) == abnormal
        # every test-part name has a mask; the training-part names (normal) have none
        assert all((masks / f"{n}.npy").is_file() == bool(TEST_PART_NAME.match(n)) for n in names)
    train, test = (set(parse_split_list(sh / f)) for f in ("SH_Train.txt", "SH_Test.txt"))
    assert not train & test


def test_full_size_gt_of_the_107_masks(sh):
    files = sorted((sh / "test_frame_mask").glob("*.npy"))
    assert len(files) == 107
    gts = {f.stem: mask_to_gt(load_mask(f), np.load(f).shape[0], video=f.stem) for f in files}
    # independent count: the raw arrays, no project code
    raw_total = sum(np.load(f).size for f in files)
    raw_anomalous = sum(int((np.load(f) != 0).sum()) for f in files)
    assert sum(g.size for g in gts.values()) == raw_total
    assert sum(int(g.sum()) for g in gts.values()) == raw_anomalous
    assert (raw_total, raw_anomalous) == (40_791, 17_326)
    test_names = [n for n in parse_split_list(sh / "SH_Test.txt") if n in gts]
    assert len(test_names) == 44 and all(gts[n].any() for n in test_names)


def test_mask_length_against_the_video(sh, recwarn):
    mask = load_mask(sh / "test_frame_mask" / "01_0014.npy")
    with pytest.warns(UserWarning, match="01_0014: the frame mask has"):
        assert mask_to_gt(mask, mask.size - 2, video="01_0014").size == mask.size - 2
    with pytest.raises(DataError, match="01_0014"):
        mask_to_gt(mask, mask.size + 1, video="01_0014")


def test_malformed_list_line_names_file_and_line(tmp_path):
    bad = tmp_path / "SH_Test.txt"
    bad.write_text("01_0014\nnot-a-name\n")
    with pytest.raises(DataError, match=r"SH_Test.txt, line 2"):
        parse_split_list(bad)
