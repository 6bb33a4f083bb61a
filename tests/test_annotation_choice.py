"""The readers on a root of videos only (shipped annotation files), ``annotations: release | <folder>``, the doctor's
comparison of a release's own files with the shipped ones, and ``data inspect --subset`` with fit-style arguments."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from copra_bench.cli import main
from copra_bench.datamodules import ShanghaiTechDataModule, UCFCrimeDataModule, XDViolenceDataModule
from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.synthetic import ensure_synthetic
from copra_bench.datamodules.ucf_crime import parse_temporal_annotation
from copra_bench.errors import DataError

from .test_doctor import SPEC

PRESENT = ("Abuse028_x264", "Normal_Videos_003_x264", "Arrest001_x264")


@pytest.fixture()
def videos_only(synth_cache, tmp_path) -> Path:
    """A UCF-Crime root holding three test videos under their real names, and nothing else."""
    source = sorted(Path(ensure_synthetic(SPEC, layout="ucf_crime", cache_dir=synth_cache, progress=False))
                    .rglob("*.mp4"))
    root = tmp_path / "UCF-Crime"
    for name, video in zip(PRESENT, source, strict=False):
        (root / "Videos").mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / "Videos" / f"{name}.mp4")
    return root


def test_a_root_of_videos_only_reads_the_shipped_files(videos_only):
    dm = UCFCrimeDataModule(root=str(videos_only))
    assert dm.annotations == "shipped" and dm.annotation_source() == "official"
    listing = dm.list_split("test")
    assert listing.files == [shipped("ucf_crime", "Anomaly_Test.txt"),
                             shipped("ucf_crime", "Temporal_Anomaly_Annotation.txt")]
    assert len(listing.records) == 290 and sum(r.path.exists() for r in listing.records) == len(PRESENT)
    with pytest.raises(DataError, match=r"no test split list \(Anomaly_Test.txt\) in .*UCF-Crime"):
        UCFCrimeDataModule(root=str(videos_only), annotations="release").list_split("test")
    with pytest.raises(DataError, match="annotations folder .*nowhere does not exist"):
        UCFCrimeDataModule(root=str(videos_only), annotations="nowhere").annotations_dir()


def test_vera_ground_truth_is_selectable_and_differs_for_14_videos(videos_only):
    dm = UCFCrimeDataModule(root=str(videos_only), annotation_file="vera")
    dm.list_split("test")
    vera = dm._annotation
    official = parse_temporal_annotation(shipped("ucf_crime", "Temporal_Anomaly_Annotation.txt"))
    assert dm.annotation_source() == "UCF_Eval.json" and set(vera) == set(official)
    assert sum(vera[v] != official[v] for v in official) == 14
    assert vera["Burglary076_x264"][0] == "Burglary" and vera["Burglary076_x264"] != official["Burglary076_x264"]


def test_release_files_are_compared_with_the_shipped_ones(videos_only, tmp_path):
    ours = shipped("ucf_crime", "Temporal_Anomaly_Annotation.txt").read_text().splitlines()
    # the release's own file: names with .mp4 and other spacing (no difference), one interval moved (a difference)
    theirs = [line.split()[0] + ".mp4 " + " ".join(line.split()[1:]) for line in ours]
    theirs[1] = theirs[1].replace("1275", "1200")
    (videos_only / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(theirs) + "\n")
    (videos_only / "Anomaly_Detection_splits").mkdir()
    shutil.copy(shipped("ucf_crime", "Anomaly_Test.txt"), videos_only / "Anomaly_Detection_splits")
    for choice in ("shipped", "release", str(videos_only)):
        differences = UCFCrimeDataModule(root=str(videos_only), annotations=choice).compare_with_shipped("test")
        assert len(differences) == 1, differences  # the split list is identical
        assert "Temporal_Anomaly_Annotation_for_Testing_Videos.txt differs from the shipped" in differences[0]
        assert "1 videos with a different entry: Abuse030_x264 (release line 2:" in differences[0]
    assert UCFCrimeDataModule(root=str(videos_only), annotations="release").list_split("test").files[1].parent \
        == videos_only


def test_inspect_subset_with_fit_style_arguments(videos_only, tmp_path, capsys):
    args = ["data", "inspect", "--data", "configs/data/ucf_crime.yaml", "--data.init_args.root", str(videos_only),
            "--split", "test"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "ucf_crime test: 3 readable of 290 listed, 290 expected [PROBLEMS]" in out and "287 missing videos" in out
    assert main([*args, "--subset"]) == 0
    out = capsys.readouterr().out
    assert "subset: 287 of the 290 listed videos are not in this copy (not checked); checked the 3 present" in out
    assert "ucf_crime test: 3 readable of 3 listed, 3 expected [OK]" in out and "VERDICT: OK" in out
    # several --config, the later one wins, then a dotted override
    other = tmp_path / "other.yaml"
    other.write_text("class_path: copra_bench.datamodules.UCFCrimeDataModule\n"
                     "init_args: {root: /nowhere, annotations: release}\n")
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("seed_everything: 0\ndata: other.yaml\n")
    assert main(["data", "inspect", "--config", "configs/in_domain_ucf.yaml", "--config", str(experiment),
                 "--data.init_args.root", str(videos_only), "--subset"]) == 1
    out = capsys.readouterr().out
    assert f"no train split list (Anomaly_Train.txt) in {videos_only}" in out  # annotations: release from other.yaml
    assert main(["data", "inspect", "--data.init_args.root", "x"]) == 2
    assert "error:" in capsys.readouterr().err


def test_xd_and_shanghaitech_read_and_compare_the_shipped_files(tmp_path):
    root = tmp_path / "XD"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    lines = shipped("xd_violence", "annotations.txt").read_text().splitlines()
    (root / "annotations.txt").write_text("\n".join(lines[:-1]) + "\n")
    xd = XDViolenceDataModule(root=str(root))
    assert xd.annotation_path() == shipped("xd_violence", "annotations.txt")
    assert len(xd.list_split("test").records) == 500  # the annotated ones, all reported missing
    [difference] = xd.compare_with_shipped("test")
    assert f"1 videos only in the shipped copy: {lines[-1].split()[0].removesuffix('.mp4')}" in difference

    root = tmp_path / "SH"
    shutil.copytree(shipped("shanghaitech", "test_frame_mask"), root / "testing" / "test_frame_mask")
    mask = np.load(shipped("shanghaitech", "test_frame_mask/01_0014.npy"))
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", 1 - mask)
    sh = ShanghaiTechDataModule(root=str(root))
    train = sh.list_split("train")
    assert len(train.records) == 238 and sum(r.label for r in train.records) == 63
    assert sh.masks_folder() == shipped("shanghaitech", "test_frame_mask")
    [difference] = sh.compare_with_shipped("train")
    assert f"1 videos: 01_0014 ({mask.size} frames differ, the first is frame 0)" in difference
    release = ShanghaiTechDataModule(root=str(root), annotations="release")
    with pytest.raises(DataError, match="no ShanghaiTech train list"):
        release.list_split("train")
