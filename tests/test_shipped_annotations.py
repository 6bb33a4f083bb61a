"""The shipped annotation files: byte-identical to what SOURCES.md records, all listed there, all in the wheel."""

from __future__ import annotations

import fnmatch
import re

import pytest

from copra_bench.datamodules.annotations import (
    ANNOTATIONS_DIR, DATASETS, SOURCES, recorded_checksums, sha256, shipped, shipped_files,
)
from copra_bench.errors import DataError

from .test_dependencies import PYPROJECT


def test_every_shipped_file_has_the_sha256_recorded_in_sources():
    recorded = recorded_checksums()
    files = shipped_files()
    assert len(files) == 116  # 4 UCF-Crime + 3 XD-Violence + 2 ShanghaiTech lists + 107 frame masks
    assert sorted(recorded) == files, "SOURCES.md's checksum block and the shipped files disagree"
    changed = [f for f in files if sha256(ANNOTATIONS_DIR / f) != recorded[f]]
    assert not changed, f"edited without updating SOURCES.md (and saying why): {changed}"


def test_every_shipped_file_says_where_it_comes_from():
    rows = [line for line in SOURCES.read_text().splitlines() if line.startswith("| `")]
    named = [name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])]
    patterns = []
    for name in named:  # `shanghaitech/SH_Train.txt`, `SH_Test.txt`: a bare name is in the row's folder
        patterns.append(name if "/" in name else f"{patterns[-1].rsplit('/', 1)[0]}/{name}")
    unsourced = [f for f in shipped_files() if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not unsourced and all("github.com" in row or "@" in row for row in rows)


def test_the_wheel_carries_them():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert "copra_bench.datamodules.annotations" in setuptools["packages"]
    globs = setuptools["package-data"]["copra_bench.datamodules.annotations"]
    uncovered = [f for f in shipped_files() + ["SOURCES.md"] if not any(fnmatch.fnmatch(f, g) and
                                                                        f.count("/") == g.count("/") for g in globs)]
    assert not uncovered


def test_the_published_figures_hold_on_the_shipped_copies(real_dir):
    assert real_dir == ANNOTATIONS_DIR and set(DATASETS) <= {p.name for p in real_dir.iterdir()}
    assert len((real_dir / "ucf_crime" / "Anomaly_Train.txt").read_text().splitlines()) == 1610
    assert len((real_dir / "ucf_crime" / "Anomaly_Test.txt").read_text().splitlines()) == 290
    with pytest.raises(DataError, match="no annotation files are shipped for 'avenue'"):
        shipped("avenue")
    with pytest.raises(DataError, match="missing from the installed package"):
        shipped("ucf_crime", "Anomaly_Validation.txt")
