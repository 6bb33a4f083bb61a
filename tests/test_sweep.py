"""Sweeps: grid expansion, config validation and hashing, MLflow bookkeeping (resume, failures, parallel runs),
the paper-ablation sweep files, and one small sweep end to end (slow) with an interruption and a resume."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from copra_bench.cli import main
from copra_bench.run_identity import HASH_EXCLUDED, HASH_EXCLUDED_FIT, config_hash
from copra_bench.sweep.resolve import build_parser, parse_run
from copra_bench.sweep.spec import SweepError, SweepSpec

from .conftest import REPO, copy_empty_store, small_cross_domain

SWEEPS = REPO / "configs" / "sweeps"
MAIN = str(REPO / "configs" / "cross_domain.yaml")

# A stand-in for `python -m copra_bench <subcommand> ...`: records its call, logs into the run the sweep created
# (so parallel runs really write to the sqlite store at once), and fails for seed 1.
FAKE_RUN = r'''
import os, sys
args = sys.argv[1:]
value = lambda key: args[args.index(key) + 1] if key in args else None
with open(os.environ["FAKE_RUN_CALLS"], "a") as fh:
    fh.write(value("--seed_everything") + "\n")
if value("--seed_everything") == "1" and os.environ.get("FAKE_RUN_FAIL_SEED1"):
    print("RuntimeError: boom in seed 1", file=sys.stderr)
    sys.exit(3)
if os.environ.get("FAKE_RUN_LOGS"):
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient
    client = MlflowClient(value("--trainer.logger.init_args.tracking_uri"))
    run_id = value("--trainer.logger.init_args.run_id")
    for step in range(5):
        client.log_metric(run_id, "test/fake/step1/auc", 0.5 + 0.01 * step, step=step)
    client.set_tag(run_id, "method", "fake")
'''


@pytest.fixture(scope="module")
def parser():
    return build_parser()  # cached: the sweep command reuses it


def _spec(tmp_path: Path, grid: dict, **extra) -> Path:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = {"sweep": "t", "configs": [MAIN],
           "set": {"trainer.logger.init_args.tracking_uri": uri, "trainer.logger.init_args.local_dir":
                   str(tmp_path / "outputs"), **extra.pop("set", {})},
           "grid": grid, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _runs(db: Path) -> list[tuple[str, str, dict]]:
    connection = sqlite3.connect(db)
    out = []
    for run_id, status in connection.execute("select run_uuid, status from runs order by start_time"):
        tags = dict(connection.execute("select key, value from tags where run_uuid=?", (run_id,)).fetchall())
        out.append((run_id, status, tags))
    return out


def test_grid_expansion_is_the_cartesian_product_with_zipped_axes_and_excludes():
    spec = SweepSpec.from_dict({"configs": [MAIN], "set": {"trainer.max_epochs": 1}, "grid": {
        "seed_everything": [0, 1, 2], "model.init_args.backbone_dtype": ["float32", "bfloat16"],
        "data.init_args.source.init_args.domain,data.init_args.target.init_args.domain": [["A", "B"], ["B", "A"]]},
        "exclude": [{"seed_everything": 2, "model.init_args.backbone_dtype": "bfloat16"}]})
    runs = spec.expand()
    expected = [(s, d, p) for s, d, p in itertools.product([0, 1, 2], ["float32", "bfloat16"], [("A", "B"), ("B", "A")])
                if not (s == 2 and d == "bfloat16")]
    assert len(runs) == len(expected) == 10
    for run, (seed, dtype, (source, target)) in zip(runs, expected, strict=True):
        assert run.axes == {"seed_everything": seed, "model.init_args.backbone_dtype": dtype,
                            "data.init_args.source.init_args.domain": source,
                            "data.init_args.target.init_args.domain": target}
        args = run.args
        assert args[:2] == ["--config", MAIN]
        assert args[args.index("--seed_everything") + 1] == str(seed)
        assert args[args.index("--data.init_args.target.init_args.domain") + 1] == target
        assert args.index("--trainer.max_epochs") < args.index("--seed_everything")  # fixed before axes
    assert [r.index for r in runs] == list(range(10))


def test_bad_sweep_files_are_named(tmp_path):
    with pytest.raises(SweepError, match="zipped grid axis"):
        SweepSpec.from_dict({"grid": {"a.b,c": [[1, 2], [3]]}})
    with pytest.raises(SweepError, match="non-empty list"):
        SweepSpec.from_dict({"grid": {"seed_everything": 3}})
    with pytest.raises(SweepError, match="unknown top-level"):
        SweepSpec.from_dict({"grid": {}, "seed_everything": 3})
    with pytest.raises(SweepError, match="missing.yaml"):
        SweepSpec.from_dict({"configs": ["missing.yaml"]}, path=tmp_path / "s.yaml")


def test_relative_paths_are_found_next_to_the_sweep_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("seed_everything: 3\n")
    (tmp_path / "sub" / "s.yaml").write_text("configs: [base.yaml]\ngrid:\n  model: [m.yaml]\n")
    (tmp_path / "sub" / "m.yaml").write_text("class_path: x\n")
    spec = SweepSpec.load(tmp_path / "sub" / "s.yaml")
    assert spec.configs == [str((tmp_path / "base.yaml").resolve())]
    assert spec.grid["model"] == [str((tmp_path / "sub" / "m.yaml").resolve())]
    assert spec.sweep_id == "s"


def test_config_hash_ignores_bookkeeping_and_key_order(parser):
    base = ["--config", MAIN]
    a = parse_run(parser, "fit", base + ["--seed_everything", "1"])
    b = parse_run(parser, "fit", base + ["--trainer.logger.init_args.tracking_uri", "sqlite:////x/y.db",
                                         "--seed_everything", "1"])
    c = parse_run(parser, "fit", base + ["--seed_everything", "2"])
    assert a["trainer"]["logger"] != b["trainer"]["logger"]
    assert config_hash("fit", a) == config_hash("fit", b)
    assert config_hash("fit", a) != config_hash("fit", c)
    assert config_hash("fit", a) != config_hash("test", a)
    reordered = json.loads(json.dumps(dict(reversed(list(a.items())))))
    assert config_hash("fit", reordered) == config_hash("fit", a)


# One fixed resolved config with every kind of key the hash leaves out. Its hashes are pinned: a change to how runs
# are identified would stop sweeps from finding their finished runs and `fit --ckpt_path last` from resuming.
PINNED_CONFIG = {
    "seed_everything": 0, "ckpt_path": "last", "config": ["a.yaml"], "__path__": "x.yaml",
    "trainer": {"max_epochs": 2,
                "logger": {"class_path": "copra_bench.tracking.MLFlowLogger", "init_args": {"run_id": "abc"}},
                "callbacks": [{"class_path": "C", "init_args": {"k": 1, "__path__": "c.yaml"}}]},
    "model": {"class_path": "copra_bench.copra.COPRA",
              "init_args": {"lr": 0.0001, "backbone": "tiny-qwen2-vl", "x": None}},
    "data": {"__path__": "d.yaml", "class_path": "D", "init_args": {"frames_per_window": 4, "window_seconds": 2.0}},
}


def test_config_hash_is_pinned():
    assert HASH_EXCLUDED == ("trainer.logger", "config", "__path__") and HASH_EXCLUDED_FIT == ("ckpt_path",)
    assert config_hash("fit", PINNED_CONFIG) == "31afe1b7ac0016c3"
    assert config_hash("test", PINNED_CONFIG) == "3f5392d4d3bb9e3e"
    bookkeeping = json.loads(json.dumps(PINNED_CONFIG))
    bookkeeping["trainer"]["logger"]["init_args"]["run_id"] = "another"
    bookkeeping["config"] = ["b.yaml"]
    bookkeeping["model"]["__path__"] = "m.yaml"
    bookkeeping["ckpt_path"] = None
    assert config_hash("fit", bookkeeping) == "31afe1b7ac0016c3"
    assert config_hash("test", bookkeeping) != "3f5392d4d3bb9e3e"  # for test the checkpoint is what is evaluated


def test_unknown_grid_key_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, {"seed_everything": [0, 1], "model.init_args.no_such_option": [1, 2]})
    assert main(["sweep", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_option" in err and "nothing was run" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


# The 135-point matrix files are checked by tests/test_sweep_submitit.py (counts, axes, and a parse of every cell x
# method): a dry run resolves all 135 configs, a minute of the suite for nothing more.
@pytest.mark.parametrize("sweep", sorted(p.name for p in SWEEPS.glob("*.yaml") if not p.name.startswith("matrix_")))
def test_paper_ablation_sweeps_pass_dry_run(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec.load(SWEEPS / sweep)
    assert main(["sweep", "--config", str(SWEEPS / sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    expected = len(spec.expand())
    assert f"{expected} runs, 0 already finished, {expected} to run" in out
    assert all(f"[{i}] to run" in out for i in range(expected))
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


def test_emit_commands_one_per_run_with_sweep_tags(tmp_path, monkeypatch, capsys, parser):
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, {"seed_everything": [0, 1]})
    assert main(["sweep", "--config", str(path), "--emit-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    hashes = set()
    for seed, line in enumerate(lines):
        argv = shlex.split(line)
        assert argv[:4] == [sys.executable, "-m", "copra_bench", "fit"]
        tags = json.loads(argv[argv.index("--trainer.logger.init_args.tags") + 1])
        assert tags["sweep.id"] == "t" and json.loads(tags["sweep.axes"]) == {"seed_everything": str(seed)}
        resolved = parse_run(parser, "fit", argv[4:])  # the emitted command parses, tags and all
        assert resolved["trainer"]["logger"]["init_args"]["tags"]["sweep.config_hash"] == tags["sweep.config_hash"]
        assert config_hash("fit", resolved) == tags["sweep.config_hash"]
        hashes.add(tags["sweep.config_hash"])
    assert len(hashes) == 2
    assert not (tmp_path / "mlflow.db").exists()


def _fake_launcher(tmp_path: Path, monkeypatch, *, fail_seed1: bool = False, logs: bool = False) -> list[str]:
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    monkeypatch.setenv("FAKE_RUN_CALLS", str(tmp_path / "calls.txt"))
    if fail_seed1:
        monkeypatch.setenv("FAKE_RUN_FAIL_SEED1", "1")
    if logs:
        monkeypatch.setenv("FAKE_RUN_LOGS", "1")
    return [sys.executable, str(script)]


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_failed_run_is_recorded_the_sweep_goes_on_and_a_rerun_skips_finished(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    launcher = _fake_launcher(tmp_path, monkeypatch, fail_seed1=True)
    path = _spec(tmp_path, {"seed_everything": [0, 1, 2]}, launcher=launcher)
    assert main(["sweep", "--config", str(path), "--max-runs", "2"]) == 1  # stopped after two, one failed
    assert _calls(tmp_path) == ["0", "1"]
    runs = _runs(tmp_path / "mlflow.db")
    assert [s for _, s, _ in runs] == ["FINISHED", "FAILED"]
    assert "boom in seed 1" in runs[1][2]["sweep.error"] and "exit status 3" in runs[1][2]["sweep.error"]
    capsys.readouterr()
    assert main(["sweep", "--config", str(path), "--emit-commands"]) == 0  # for a scheduler: what is left to run
    emitted = capsys.readouterr()
    assert [json.loads(shlex.split(line)[shlex.split(line).index("--seed_everything") + 1])
            for line in emitted.out.splitlines()] == [1, 2]
    assert "1 of 3 runs already finished" in emitted.err
    assert all(t["sweep.id"] == "t" and len(t["sweep.config_hash"]) == 16 for _, _, t in runs)
    assert runs[0][2]["sweep.config_hash"] != runs[1][2]["sweep.config_hash"]

    monkeypatch.delenv("FAKE_RUN_FAIL_SEED1")
    capsys.readouterr()
    assert main(["sweep", "--config", str(path)]) == 0  # the failed one again, and the one not started
    assert _calls(tmp_path) == ["0", "1", "1", "2"]
    assert "3 runs, 1 already finished, 2 to run" in capsys.readouterr().out
    assert main(["sweep", "--config", str(path), "--dry-run"]) == 0
    assert "3 runs, 3 already finished, 0 to run" in capsys.readouterr().out
    runs = _runs(tmp_path / "mlflow.db")
    assert [s for _, s, _ in runs] == ["FINISHED", "FAILED", "FINISHED", "FINISHED"]
    finished_hashes = [t["sweep.config_hash"] for _, s, t in runs if s == "FINISHED"]
    assert len(set(finished_hashes)) == 3, "each config finished exactly once"


@pytest.mark.slow  # two processes importing mlflow; the end-to-end test below also runs two at once
def test_two_runs_at_once_write_to_one_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, {"seed_everything": [0, 1]}, launcher=_fake_launcher(tmp_path, monkeypatch, logs=True))
    assert main(["sweep", "--config", str(path), "--max-parallel", "2"]) == 0
    db = tmp_path / "mlflow.db"
    runs = _runs(db)
    assert [s for _, s, _ in runs] == ["FINISHED"] * 2 and all(t["method"] == "fake" for _, _, t in runs)
    connection = sqlite3.connect(db)
    assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
    for run_id, _, _ in runs:  # every metric of every run arrived
        count = connection.execute("select count(*) from metrics where run_uuid=?", (run_id,)).fetchone()[0]
        assert count == 5


# ---------------------------------------------------------------------------------------------- end to end (slow)

class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.sources: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_starttag(self, tag, attrs) -> None:
        self.sources += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.slow
def test_small_sweep_interrupted_resumed_and_reported(tmp_path, monkeypatch, synth_cache, empty_store,
                                                      capsys):
    """Three frozen-model runs (nothing to train) on a tiny synthetic world: kill the sweep during its second run, resume it two at a
    time, rerun it (nothing left), then build the report and find every run in the HTML."""
    monkeypatch.chdir(tmp_path)
    data = small_cross_domain(synth_cache, frames_per_window=4)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    path = _spec(tmp_path, {"seed_everything": [0, 1, 2]}, set={
        "model": str(REPO / "configs" / "model" / "frozen_tiny.yaml"), "data": str(tmp_path / "data.yaml"),
        "model.init_args.bootstrap_samples": 20, "trainer.logger.init_args.experiment_name": "e2e"})
    db = copy_empty_store(empty_store, tmp_path / "mlflow.db")  # its creation: the tests with fake runs above

    sweep = subprocess.Popen([sys.executable, "-m", "copra_bench", "sweep", "--config", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.time() + 300
    while time.time() < deadline and sweep.poll() is None:
        if db.exists() and len(_runs_safe(db)) == 2:  # the first run is recorded, the second has started
            break
        time.sleep(0.5)
    assert sweep.poll() is None, sweep.communicate()[0]
    time.sleep(2)  # let the second run's process get going
    sweep.send_signal(signal.SIGTERM)
    output = sweep.communicate(timeout=60)[0]
    assert sweep.returncode == 143, output
    statuses = [s for _, s, _ in _runs(db)]
    assert statuses[0] == "FINISHED" and statuses[1:] == ["KILLED"], output

    assert main(["sweep", "--config", str(path), "--max-parallel", "2"]) == 0
    assert "3 runs, 1 already finished, 2 to run" in capsys.readouterr().out
    assert main(["sweep", "--config", str(path)]) == 0
    assert "3 runs, 3 already finished, 0 to run" in capsys.readouterr().out
    runs = _runs(db)
    assert sorted(s for _, s, _ in runs) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    finished = [t for _, s, t in runs if s == "FINISHED"]
    assert sorted(json.loads(t["sweep.axes"])["seed_everything"] for t in finished) == ["0", "1", "2"]
    # the run itself computes the same identity the sweep planned (what `fit --ckpt_path last` looks up)
    assert all(t["config_hash"] == t["sweep.config_hash"] for t in finished)

    out = tmp_path / "report"
    assert main(["report", "--experiment", "e2e", "--tracking-uri", f"sqlite:///{db}", "--out", str(out)]) == 0
    page = _Text()
    page.feed((out / "leaderboard.html").read_text())
    text = " ".join(page.text)
    assert all(run_id in text for run_id, _, _ in runs)
    assert "synth_ucf_B" in text and "synth_ucf_A" in text and "3 (0,1,2)" in text
    assert not [s for s in page.sources if not s.startswith("data:")], "the page must not load anything"
    assert all(run_id in (out / "leaderboard.md").read_text() for run_id, _, _ in runs)


def _runs_safe(db: Path):
    try:
        return _runs(db)
    except sqlite3.OperationalError:  # tables not created yet
        return []
