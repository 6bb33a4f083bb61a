"""``sweep --devices 0,1,2,3 --per-run N``: each run gets GPUs of its own through CUDA_VISIBLE_DEVICES (checked in
the environment each child really got, with a stand-in run), no two concurrent runs share a device, the devices are
tagged, bad input is named, and a sweep stopped mid-way continues its runs when started again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from copra_bench.cli import main
from copra_bench.sweep.devices import DevicePool, parse_devices
from copra_bench.sweep.spec import SweepError

from .conftest import REPO
from .sweep_fakes import calls, db_runs, fake_launcher, sweep_file

MAIN = str(REPO / "configs" / "cross_domain.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("0,1,1", "GPU 1 is listed twice"), ("0,a", "'a' is not a GPU index"), ("0,,1", "separated by commas"),
    ("-1", "'-1' is not a GPU index")])
def test_bad_device_lists_are_named(text, message):
    with pytest.raises(SweepError, match=message):
        parse_devices(text)


def test_slots_split_the_devices_and_per_run_larger_than_the_list_is_refused():
    pool = DevicePool([0, 1, 2, 3, 4], 2)
    assert pool.slots == [(0, 1), (2, 3)] and pool.unused == [4] and pool.size == 2
    first, second = pool.take(), pool.take()
    assert (first, second, pool.take()) == ((0, 1), (2, 3), None)
    pool.give_back(second)
    assert pool.take() == (2, 3)
    with pytest.raises(SweepError, match="more than the 2 GPU"):
        DevicePool([0, 1], 3)


@pytest.mark.parametrize(("options", "message"), [
    (["--devices", "0,1", "--max-parallel", "2"], "drop --max-parallel"),
    (["--per-run", "2"], "--per-run needs --devices"), (["--devices", "0,0"], "listed twice")])
def test_conflicting_options_are_errors_before_anything_runs(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, [0], launcher=fake_launcher(tmp_path, monkeypatch), configs=[MAIN])
    assert main(["sweep", "--config", str(path), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def _overlapping_share_no_device(records: list[dict]) -> None:
    for a in records:
        for b in records:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["cvd"].split(",")) & set(b["cvd"].split(",")), (a, b)


def test_each_run_gets_its_own_gpus_and_a_freed_slot_takes_the_next(tmp_path, monkeypatch, capsys):
    """Five runs on --devices 0,1,2,3,4 --per-run 2: two at a time on GPUs 0,1 and 2,3 (4 left unused), each child's
    CUDA_VISIBLE_DEVICES is its slot, --trainer.devices 2 is added, the devices are tagged and echoed."""
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, range(5), launcher=fake_launcher(tmp_path, monkeypatch, seconds=1.5),
                      configs=[MAIN])
    assert main(["sweep", "--config", str(path), "--devices", "0,1,2,3,4", "--per-run", "2"]) == 0
    captured = capsys.readouterr()
    assert "2 at a time on GPU slots 0,1 2,3" in captured.out and "GPU 4 left unused" in captured.err
    records = calls(tmp_path)
    assert sorted(r["seed"] for r in records) == ["0", "1", "2", "3", "4"]
    assert {r["cvd"] for r in records} == {"0,1", "2,3"} and {r["devices"] for r in records} == {"2"}
    _overlapping_share_no_device(records)
    assert max(sum(a["start"] <= b["start"] < a["end"] for a in records) for b in records) == 2, "two at once"
    runs = db_runs(tmp_path / "mlflow.db")
    by_id = {r["run_id"]: r["cvd"] for r in records}
    assert all(status == "FINISHED" and tags["sweep.devices"] == by_id[run_id] for run_id, status, tags in runs)
    assert all(f"on GPU {r['cvd']}" in captured.out for r in records)


@pytest.mark.slow  # two sweep processes (about 20 s)
def test_a_sweep_stopped_mid_way_continues_its_runs_on_restart(tmp_path, monkeypatch, capsys):
    """SIGTERM to the sweep while two runs hold GPUs 0 and 1: they write last.ckpt and end KILLED; the restarted
    sweep resumes both in their own runs (--ckpt_path last) on free GPUs and runs the third; nothing runs twice."""
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, range(3), launcher=fake_launcher(tmp_path, monkeypatch, seconds=60), configs=[MAIN])
    argv = [sys.executable, "-m", "copra_bench", "sweep", "--config", str(path), "--devices", "0,1"]
    sweep = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "run_dirs").glob("*"))) < 2:
        assert sweep.poll() is None, sweep.communicate()[0]
        time.sleep(0.2)
    time.sleep(0.5)
    sweep.send_signal(signal.SIGTERM)
    output = sweep.communicate(timeout=60)[0]
    assert sweep.returncode == 143, output
    first = calls(tmp_path)
    assert len(first) == 2 and all(r["stopped"] for r in first) and {r["cvd"] for r in first} == {"0", "1"}
    assert [s for _, s, _ in db_runs(tmp_path / "mlflow.db")] == ["KILLED", "KILLED"]

    monkeypatch.setenv("FAKE_SECONDS", "0.5")
    assert main(argv[3:]) == 0
    assert "3 runs, 0 already finished, 3 to run" in capsys.readouterr().out
    second = calls(tmp_path)[2:]
    resumed = {r["run_id"] for r in second if r["resume"]}
    assert resumed == {r["run_id"] for r in first}, "both stopped runs continue in their own MLflow runs"
    assert len(second) == 3 and {r["seed"] for r in second} == {"0", "1", "2"}
    _overlapping_share_no_device(second)
    runs = db_runs(tmp_path / "mlflow.db")
    assert sorted(s for _, s, _ in runs) == ["FINISHED"] * 3
