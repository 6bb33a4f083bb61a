"""Data that would count twice: a video listed twice in a split, or annotated twice with different intervals, is an
error naming the file and both lines (in loading and in ``data inspect``); an exact repeat is dropped with a warning."""

from __future__ import annotations

import warnings

import pytest

from copra_bench.cli import main
from copra_bench.datamodules.shanghaitech import parse_split_list
from copra_bench.datamodules.ucf_crime import parse_split, parse_temporal_annotation
from copra_bench.datamodules.xd_violence import parse_annotations
from copra_bench.errors import DataError

from .test_doctor import _config, _copy


def _write(tmp_path, name: str, *lines: str):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_exact_repeat_is_dropped_with_a_warning(tmp_path):
    split = _write(tmp_path, "Anomaly_Test.txt", "Abuse/Abuse028_x264.mp4", "Arson/Arson011_x264.mp4",
                   "Abuse/Abuse028_x264.mp4 ")
    with pytest.warns(UserWarning, match=r"Anomaly_Test.txt, line 3: repeats line 1 \(Abuse028_x264\) exactly"):
        entries = parse_split(split)
    assert entries == [("Abuse028_x264", "Abuse"), ("Arson011_x264", "Arson")]


def test_a_clean_list_gives_no_warning(tmp_path):
    split = _write(tmp_path, "SH_Test.txt", "01_0014", "01_0015")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_split_list(split) == ["01_0014", "01_0015"]


@pytest.mark.parametrize("parse, name, first, second", [
    (parse_split, "Anomaly_Train.txt", "Abuse/Abuse001_x264.mp4", "Arrest/Abuse001_x264.mp4"),
    (parse_temporal_annotation, "Temporal_Anomaly_Annotation.txt", "Abuse028_x264.mp4  Abuse  165  240  -1  -1",
     "Abuse028_x264.mp4  Abuse  165  960  -1  -1"),
    (parse_annotations, "annotations.txt", "A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A 100 200",
     "A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A 100 300"),
    (parse_split_list, "SH_Train.txt", "01_001", "01_001.avi"),
])
def test_two_differing_lines_for_one_video_are_an_error_naming_both(tmp_path, parse, name, first, second):
    path = _write(tmp_path, name, first, "", second)
    with pytest.raises(DataError) as info:
        parse(path)
    message = str(info.value)
    assert str(path) in message and "line 1" in message and "line 3" in message
    assert " ".join(first.split()) in message and " ".join(second.split()) in message
    assert "delete the other" in message


def test_data_inspect_reports_a_conflicting_annotation(synth_cache, tmp_path, capsys):
    root, _meta = _copy("ucf_crime", synth_cache, tmp_path)
    annotation = root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    lines = annotation.read_text().splitlines()
    abnormal = next(line for line in lines if line.split()[2] != "-1")  # an annotated event: move its end
    fields = abnormal.split()
    conflicting = " ".join(fields[:3] + [str(int(fields[3]) + 7)] + fields[4:])
    annotation.write_text("\n".join(lines + [conflicting]) + "\n")

    code = main(["data", "inspect", "--config", _config(tmp_path, "copra_bench.datamodules.UCFCrimeDataModule",
                                                        root=str(root), annotations="release")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0
    assert "two differing temporal-annotation entries" in text and fields[0].removesuffix(".mp4") in text
    assert str(annotation) in text
