"""The dataset doctor (``data inspect``) on synthetic trees with planted problems, compared with what was planted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from copra_bench.cli import main
from copra_bench.datamodules import SyntheticShanghaiTechDataModule
from copra_bench.datamodules.doctor import inspect_datamodule
from copra_bench.datamodules.synthetic import SyntheticSpec, ensure_synthetic

from .conftest import SMALL_WORLD, copy_synthetic_ucf

# The small world of the other data tests (same cache entries in a full run).
SPEC = SyntheticSpec(num_train_normal=3, num_train_abnormal=3, num_test_normal=2, num_test_abnormal=2, fps=8,
                     min_seconds=4.0, max_seconds=6.0, frame_size=48)


def _copy(layout: str, synth_cache: Path, tmp_path: Path) -> tuple[Path, dict]:
    source = ensure_synthetic(SPEC, layout=layout, cache_dir=synth_cache, progress=False)
    root = tmp_path / layout
    shutil.copytree(source, root)
    return root, json.loads((root / "synthetic_meta.json").read_text())


def _config(tmp_path: Path, class_path: str, **init_args) -> str:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"class_path": class_path, "init_args": init_args}))
    return str(path)


def test_planted_ucf_tree_is_reported_completely(synth_cache, tmp_path, capsys):
    root, meta = _copy("ucf_crime", synth_cache, tmp_path)
    train = [v for v in meta["videos"] if v["split"] == "train"]
    test = [v for v in meta["videos"] if v["split"] == "test"]
    missing = [root / train[0]["relpath"], root / test[0]["relpath"]]
    for path in missing:
        path.unlink()
    corrupt = root / train[1]["relpath"]
    corrupt.write_bytes(b"\x00" * 100)
    annotation = root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    lines = annotation.read_text().splitlines(keepends=True)
    unannotated = lines[-1].split()[0].removesuffix(".mp4")
    annotation.write_text("".join(lines[:-1]) + "Ghost001_x264.mp4  Abuse  1  5  -1  -1\n")

    code = main(["data", "inspect", "--config", _config(tmp_path, "copra_bench.datamodules.UCFCrimeDataModule",
                                                        root=str(root), annotations="release")])
    out = capsys.readouterr().out
    assert code == 1 and "VERDICT: the protocol cannot run as specified" in out
    for path in missing:
        assert f"    {path.stem} (not found" in out
    assert f"    {corrupt} (" in out
    assert "videos without annotation (1):\n    " + unannotated in out
    # the deleted test video is reported once, as missing, not again as an annotation without a video
    assert "annotation entries without a video (1):\n    Ghost001_x264\n" in out
    # frame totals of the readable test videos, counted independently from the generator's metadata
    readable = [v for v in test if root / v["relpath"] not in missing and v["name"] != unannotated]
    total = sum(v["num_frames"] for v in test if root / v["relpath"] not in missing)
    anomalous = sum(e[1] - e[0] for v in readable for e in v["events"])
    assert f"frames: {total} total, {anomalous} anomalous" in out
    assert f"ucf_crime train: {len(train) - 2} readable of {len(train)} listed" in out


def test_xd_label_mismatch_and_annotated_video_without_file(synth_cache, tmp_path, capsys):
    root, meta = _copy("xd_violence", synth_cache, tmp_path)
    test = [v for v in meta["videos"] if v["split"] == "test"]
    normal = next(v["name"] for v in test if v["label"] == 0)
    violent = next(v for v in test if v["label"] == 1)
    (root / violent["relpath"]).unlink()
    with open(root / "annotations.txt", "a") as fh:
        fh.write(f"{normal}.mp4 2 6\n")
    config = _config(tmp_path, "copra_bench.datamodules.XDViolenceDataModule", root=str(root),
                     annotations="release", expected_counts={"train": 6, "test": 4})
    assert main(["data", "inspect", "--config", config, "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "label mismatches (1):\n    " + normal in out
    assert "annotation entries without a video" not in out  # the deleted video is reported once: missing
    assert f"missing (1):\n    {violent['name']} (not found; expected at {root / violent['relpath']})" in out


def test_clean_trees_pass_and_fps_is_reported(small_world, capsys, tmp_path):
    dm = SyntheticShanghaiTechDataModule(domain="A", **small_world)
    reports = inspect_datamodule(dm)
    assert [(r.dataset, r.split, r.ok) for r in reports] == [("synth_sh_A", "train", True),
                                                             ("synth_sh_A", "test", True)]
    test = reports[1]
    assert test.fps_seen == {"8": SMALL_WORLD["num_test_normal"] + SMALL_WORLD["num_test_abnormal"]}
    gts = [dm.ground_truth(r) for r in dm.load_split("test")]
    assert test.anomalous_frames == sum(int(g.sum()) for g in gts)
    assert test.total_frames == sum(g.size for g in gts)


def test_experiment_config_and_cross_domain_protocol(small_world, tmp_path, capsys):
    world = {k: v for k, v in small_world.items() if k in SMALL_WORLD or k == "cache_dir"}
    data = {"class_path": "copra_bench.datamodules.CrossDomainDataModule",
            "init_args": {"source": {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule",
                                     "init_args": {"domain": "A", **world}},
                          "target": {"class_path": "copra_bench.datamodules.SyntheticShanghaiTechDataModule",
                                     "init_args": {"domain": "B", **world}}}}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({"seed_everything": 0, "data": "data/x.yaml"}))
    assert main(["data", "inspect", "--config", str(tmp_path / "experiment.yaml")]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if "readable of" in line] == [
        "synth_ucf_A train", "synth_sh_B test", "synth_ucf_A test"]


def test_deep_check_finds_a_truncated_video(small_world, tmp_path):
    root = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    victim = min((root / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * 0.6)])
    from copra_bench.datamodules import UCFCrimeDataModule

    reports = inspect_datamodule(UCFCrimeDataModule(root=str(root), annotations="release"), deep=True,
                                 splits=("test",))
    assert len(reports[0].undecodable) == 1 and str(victim) in reports[0].undecodable[0]


def test_shanghaitech_without_masks_cannot_run(small_world, tmp_path):
    dm = SyntheticShanghaiTechDataModule(domain="A", **small_world)
    dm.prepare_data()
    root = tmp_path / "sh"
    shutil.copytree(dm.root, root)
    masks = sorted((root / "testing" / "test_frame_mask").glob("*.npy"))
    masks[0].unlink()
    np.save(masks[1], np.ones(3, np.uint8))  # a mask shorter than its video
    from copra_bench.datamodules import ShanghaiTechDataModule

    reports = inspect_datamodule(ShanghaiTechDataModule(root=str(root), fps=8.0, annotations="release"))
    problems = " ".join(p for r in reports for p in r.problems())
    assert not all(r.ok for r in reports)
    assert masks[0].stem in " ".join(m for r in reports for m in r.label_mismatches + r.videos_without_annotation)
    assert "label mismatches" in problems
    with pytest.raises(Exception, match=masks[0].stem):
        ShanghaiTechDataModule(root=str(root), fps=8.0, annotations="release").setup()


def test_xd_empty_split_and_a_name_without_label_code(synth_cache, tmp_path):
    from copra_bench.datamodules import XDViolenceDataModule
    from copra_bench.datamodules.doctor import inspect_split
    from copra_bench.errors import DataError

    root, _ = _copy("xd_violence", synth_cache, tmp_path)
    shutil.copy(next((root / "train").glob("*.mp4")), root / "train" / "holiday_clip.mp4")
    for video in (root / "test").glob("*.mp4"):
        video.unlink()
    (root / "annotations.txt").write_text("")
    dm = XDViolenceDataModule(root=str(root), annotations="release", expected_counts={"train": 7, "test": 0})
    with pytest.raises(DataError, match="xd_violence test split is empty"):
        dm.load_split("test")
    report = inspect_split(dm, "train")
    assert not report.ok and any("holiday_clip" in m and "_label_" in m for m in report.label_mismatches)
