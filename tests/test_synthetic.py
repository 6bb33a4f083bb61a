"""Tests of the synthetic surveillance world written in the UCF-Crime release layout."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from copra_bench.datamodules import synthetic
from copra_bench.datamodules.synthetic import (
    DOMAINS, GENERATOR_VERSION, LAYOUTS, UCF_CRIME_CLASSES, SyntheticSpec, build_plan, cache_path, ensure_synthetic,
    generate_ucf_crime, main_synth, plan_videos,
)
from copra_bench.datamodules.synthetic.events import EVENT_RENDERERS
from copra_bench.datamodules.synthetic.render import render_video

SMALL = dict(num_train_normal=2, num_train_abnormal=2, num_test_normal=2, num_test_abnormal=2, fps=8,
             min_seconds=3.0, max_seconds=4.0, frame_size=32)
ANNOTATION = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"


def small_spec(**kw) -> SyntheticSpec:
    return SyntheticSpec(**{**SMALL, **kw})


def decode(path: Path) -> tuple[np.ndarray, av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # frame threading only adds latency on such tiny videos
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream


def frames_digest(root: Path) -> str:
    meta = json.loads((root / "synthetic_meta.json").read_text())
    digest = hashlib.sha1()
    for v in meta["videos"]:
        digest.update(decode(root / v["relpath"])[0].tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, SyntheticSpec, dict]:
    spec = small_spec(num_train_abnormal=4, num_test_abnormal=4)
    root = generate_ucf_crime(tmp_path_factory.mktemp("ucf") / "out", spec, progress=False)
    return root, spec, json.loads((root / "synthetic_meta.json").read_text())


def test_layout_uses_the_real_release_names(dataset):
    root, spec, meta = dataset
    assert (root / ".complete").is_file()
    assert meta["generator_version"] == GENERATOR_VERSION and meta["spec"]["domain"] == "A"
    videos = meta["videos"]
    assert len(videos) == 12 and {v["split"] for v in videos} == {"train", "test"}
    for v in videos:
        path = root / v["relpath"]
        assert path.is_file() and path.name == v["name"] + ".mp4"
        if v["label"]:
            assert v["class"] in UCF_CRIME_CLASSES and v["class"] in DOMAINS["A"].anomaly_kinds
            assert v["relpath"] == f"Anomaly-Videos-Part-1/{v['class']}/{v['name']}.mp4"
            assert v["name"][len(v["class"]):] in {f"{i:03d}_x264" for i in range(1, 1000)}
        elif v["split"] == "train":
            assert v["relpath"].startswith("Training_Normal_Videos_Anomaly/Normal_Videos0")  # no underscore
        else:
            assert v["relpath"].startswith("Testing_Normal_Videos_Anomaly/Normal_Videos_0")  # with underscore
    assert len({v["name"] for v in videos}) == len(videos)


def test_split_lists_contain_exactly_the_videos_in_release_order(dataset):
    root, _, meta = dataset
    for split, fname in (("train", "Anomaly_Train.txt"), ("test", "Anomaly_Test.txt")):
        lines = (root / "Anomaly_Detection_splits" / fname).read_text().splitlines()
        expected = {v["relpath"].removeprefix("Anomaly-Videos-Part-1/") for v in meta["videos"] if v["split"] == split}
        assert len(lines) == len(expected) and set(lines) == expected
        assert all((root / "Anomaly-Videos-Part-1" / ln).is_file() or (root / ln).is_file() for ln in lines)
        normal = [ln.startswith(("Training_Normal", "Testing_Normal")) for ln in lines]
        assert normal == sorted(normal)  # abnormal first, then normals
        classes = [ln.split("/")[0] for ln in lines if "Normal" not in ln]
        assert classes == sorted(classes)  # grouped by class


def test_annotation_has_the_official_format_and_matches_meta(dataset):
    root, _, meta = dataset
    text = (root / ANNOTATION).read_text()
    by_name = {v["name"]: v for v in meta["videos"]}
    rows = [ln.split() for ln in text.splitlines()]
    assert all("  " in ln for ln in text.splitlines())  # double spaces between fields, like the original
    assert {r[0].removesuffix(".mp4") for r in rows} == {v["name"] for v in meta["videos"] if v["split"] == "test"}
    for fields in rows:
        assert len(fields) == 6 and fields[0].endswith(".mp4")
        v = by_name[fields[0].removesuffix(".mp4")]
        bounds = [int(x) for x in fields[2:]]
        if v["label"]:
            assert fields[1] == v["class"]
            events = [[s, e] for s, e, _ in v["events"]]
            assert bounds == [x for ev in events for x in ev] + [-1] * (4 - 2 * len(events))
        else:
            assert fields[1] == "Normal" and bounds == [-1, -1, -1, -1]


def test_events_are_valid_for_many_videos():
    for domain in DOMAINS:
        for seed in range(3):
            spec = SyntheticSpec(domain=domain, seed=seed, num_train_abnormal=20, num_test_abnormal=20)
            two = 0
            for v in plan_videos(spec):
                if not v.label:
                    assert v.events == () and v.cls == "Normal"
                    continue
                assert 1 <= len(v.events) <= 2 and v.cls in DOMAINS[domain].anomaly_kinds
                assert all(kind == v.cls for *_, kind in v.events)
                for s, e, _ in v.events:
                    assert 0 <= s < e <= v.num_frames and 2 * spec.fps <= e - s <= 6 * spec.fps
                if len(v.events) == 2:
                    two += 1
                    assert v.events[0][1] < v.events[1][0]
            assert two > 0


def test_decoding_gives_exact_frames_counts_and_rate(dataset):
    root, spec, meta = dataset
    for v in meta["videos"]:
        frames, stream = decode(root / v["relpath"])
        assert frames.shape == (v["num_frames"], spec.frame_size, spec.frame_size, 3) and frames.dtype == np.uint8
        assert stream.frames == v["num_frames"] and stream.average_rate == spec.fps == v["fps"]
        assert spec.min_seconds * spec.fps - 1 <= v["num_frames"] <= spec.max_seconds * spec.fps + 1
        video = next(x for x in plan_videos(spec) if x.name == v["name"])
        np.testing.assert_array_equal(frames, render_video(build_plan(spec, video)))  # lossless


def test_same_spec_same_frames_other_seed_other_frames(dataset, tmp_path):
    root, spec, _ = dataset
    again = generate_ucf_crime(tmp_path / "again", spec, progress=False)
    assert frames_digest(again) == frames_digest(root)
    other = generate_ucf_crime(tmp_path / "other", SyntheticSpec(**{**SMALL, "seed": 1, "num_train_abnormal": 4,
                                                                     "num_test_abnormal": 4}), progress=False)
    assert frames_digest(other) != frames_digest(root)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_events_are_frame_exact(domain):
    spec = small_spec(domain=domain, num_train_abnormal=2 * len(DOMAINS[domain].anomaly_kinds), num_train_normal=1,
                      num_test_normal=0, num_test_abnormal=0, max_seconds=8.0)
    kinds = set()
    for v in plan_videos(spec):
        plan = build_plan(spec, v)
        with_events, without = render_video(plan), render_video(plan, events=[])
        changed = np.flatnonzero((with_events != without).reshape(len(with_events), -1).any(axis=1))
        inside = sorted({t for s, e, _ in v.events for t in range(s, e)})
        assert changed.tolist() == inside, (v.name, v.events)  # every event frame differs, nothing else does
        kinds.update(k for *_, k in v.events)
    assert kinds == set(DOMAINS[domain].anomaly_kinds)


def test_domains_differ_in_look_noise_and_kinds():
    a, b = DOMAINS["A"], DOMAINS["B"]
    assert set(a.anomaly_kinds) & set(b.anomaly_kinds) and set(a.anomaly_kinds) != set(b.anomaly_kinds)
    assert set(EVENT_RENDERERS) <= set(UCF_CRIME_CLASSES)
    assert all(set(d.anomaly_kinds) <= set(EVENT_RENDERERS) for d in DOMAINS.values())
    stats = {}
    for name in ("A", "B"):
        spec = small_spec(domain=name)
        video = next(v for v in plan_videos(spec) if not v.label)
        frames = render_video(build_plan(spec, video)).astype(np.float32)
        sky = frames[:, :2]  # static rows: temporal change there is camera noise and flicker
        stats[name] = (frames.mean(axis=(0, 1, 2)), np.abs(np.diff(sky, axis=0)).mean())
    assert np.abs(stats["A"][0] - stats["B"][0]).max() > 40
    assert stats["B"][1] > 2 * stats["A"][1]


def test_ensure_synthetic_caches_and_regenerates_incomplete(tmp_path, monkeypatch):
    calls = []

    def counting(out_dir, spec, *, progress=True):
        calls.append(Path(out_dir))
        return generate_ucf_crime(out_dir, spec, progress=progress)

    monkeypatch.setitem(synthetic.LAYOUTS, "ucf_crime", counting)
    monkeypatch.setenv("COPRA_CACHE_DIR", str(tmp_path / "cache"))
    spec = small_spec(num_train_normal=1, num_train_abnormal=1, num_test_normal=1, num_test_abnormal=1)
    root = ensure_synthetic(spec, progress=False)
    assert root.parent == tmp_path / "cache" / "synthetic" and root.name.startswith("ucf_crime-A-")
    assert len(root.name.split("-")[-1]) == 12 and root == cache_path(spec)
    assert (root / ".complete").is_file() and len(calls) == 1 and calls[0] != root
    mtime = (root / "synthetic_meta.json").stat().st_mtime_ns
    assert ensure_synthetic(spec, progress=False) == root and len(calls) == 1
    assert (root / "synthetic_meta.json").stat().st_mtime_ns == mtime
    assert cache_path(SyntheticSpec(**{**SMALL, "min_seconds": 3})) == cache_path(small_spec())  # 3 == 3.0
    assert cache_path(small_spec(seed=1)) != cache_path(small_spec())
    (root / ".complete").unlink()  # an incomplete folder is regenerated
    assert ensure_synthetic(spec, progress=False) == root and len(calls) == 2 and (root / ".complete").is_file()
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no temporary or stale leftovers


def test_ensure_synthetic_uses_the_winner_of_a_race(tmp_path, monkeypatch):
    spec = small_spec(num_train_normal=1, num_train_abnormal=0, num_test_normal=0, num_test_abnormal=1)
    final = cache_path(spec, cache_dir=tmp_path)

    def racing(out_dir, spec, *, progress=True):
        generate_ucf_crime(out_dir, spec, progress=False)
        generate_ucf_crime(final, spec, progress=False)  # another process finishes first
        (final / "winner").write_text("")
        return Path(out_dir)

    monkeypatch.setitem(synthetic.LAYOUTS, "ucf_crime", racing)
    assert ensure_synthetic(spec, cache_dir=tmp_path, progress=False) == final
    assert (final / "winner").exists() and sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_unknown_layout_domain_and_bad_spec_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="known layouts: shanghaitech, ucf_crime, xd_violence"):
        ensure_synthetic(small_spec(), layout="nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="known domains: A, B"):
        SyntheticSpec(domain="Z")
    for bad in (dict(frame_size=33), dict(fps=0), dict(min_seconds=1.0), dict(min_seconds=5.0, max_seconds=4.0),
                dict(fps=7.5), dict(seed=-1)):
        with pytest.raises(ValueError):
            small_spec(**bad)
    assert "ucf_crime" in LAYOUTS


def test_main_synth_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--domain", "B", "--seed", "3", "--num-train-normal", "1", "--num-train-abnormal", "1",
            "--num-test-normal", "1", "--num-test-abnormal", "2", "--fps", "8", "--min-seconds", "3",
            "--max-seconds", "4", "--frame-size", "32", "--no-progress"]
    assert main_synth(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "5 videos" in printed and "frames" in printed
    meta = json.loads((out / "synthetic_meta.json").read_text())
    assert meta["spec"]["domain"] == "B" and meta["spec"]["seed"] == 3 and meta["spec"]["frame_size"] == 32
    assert (out / ".complete").is_file() and (out / ANNOTATION).read_text().count("\n") == 3
    assert all(os.path.isfile(out / v["relpath"]) for v in meta["videos"])


@pytest.mark.parametrize("args, message", [(["--layout", "nope"], "known layouts"),
                                           (["--domain", "Z"], "known domains")])
def test_main_synth_rejects_unknown_layout_or_domain(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main_synth(["--out", str(tmp_path / "x"), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("layout, frames, expect", [
    ("xd_violence", False, ["annotations.txt", "test", "train"]),
    ("shanghaitech", False, ["SH_Test.txt", "SH_Train.txt", "testing", "training"]),
    ("ucf_crime", True, ["Anomaly-Videos-Part-1", "Anomaly_Detection_splits", ANNOTATION,
                         "Testing_Normal_Videos_Anomaly", "Training_Normal_Videos_Anomaly"]),
])
def test_main_synth_writes_every_layout(tmp_path, capsys, layout, frames, expect):
    out = tmp_path / layout
    argv = ["--out", str(out), "--layout", layout, "--num-train-normal", "1", "--num-train-abnormal", "1",
            "--num-test-normal", "1", "--num-test-abnormal", "2", "--fps", "8", "--min-seconds", "3",
            "--max-seconds", "4", "--frame-size", "32", "--no-progress"] + (["--frames"] if frames else [])
    assert main_synth(argv) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith((".", "synthetic_meta"))) == expect
    meta = json.loads((out / "synthetic_meta.json").read_text())
    assert meta["layout"] == layout and meta["frames"] == frames and len(meta["videos"]) == 5
    for video in meta["videos"]:  # every video is where the meta says, with the planned number of frames
        path = out / video["relpath"]
        if path.is_dir():
            assert len(list(path.glob("*.jpg"))) == video["num_frames"]
        else:
            assert decode(path)[0].shape[0] == video["num_frames"]
    assert ("frame folders" in capsys.readouterr().out) == frames
