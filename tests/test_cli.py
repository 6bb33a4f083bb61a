"""The command line end to end on tiny synthetic data, every config in configs/, and bad input."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from copra_bench.cli import TOOLS, CopraCLI, load_tool, main
from copra_bench.evaluation.assembly import load_scores

from .conftest import REPO, SMALL_WORLD, copy_empty_store

CONFIGS = REPO / "configs"
MAIN = str(CONFIGS / "cross_domain.yaml")


def _small_data_config(tmp_path: Path, cache: Path) -> str:
    member = {k: v for k, v in SMALL_WORLD.items()}
    member["cache_dir"] = str(cache)
    config = {"class_path": "copra_bench.datamodules.CrossDomainDataModule",
              "init_args": {"source": {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule",
                                       "init_args": {"domain": "A", **member}},
                            "target": {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule",
                                       "init_args": {"domain": "B", **member}},
                            "window_seconds": 2.0, "frames_per_window": 4, "batch_size": 8,
                            "val_fraction": 0.34, "frame_size": None}}
    path = tmp_path / "small_data.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("experiment", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_experiment_config_loads(experiment, capsys):
    config = _print_config(capsys, "--config", str(CONFIGS / experiment))
    assert config["model"]["class_path"] and config["data"]["class_path"]
    assert config["trainer"]["logger"]["class_path"] == "copra_bench.tracking.MLFlowLogger"


# Component groups that are CLI arguments; configs/experiment (full runs) and configs/sweeps have their own tests.
COMPONENT_GROUPS = ("data", "model", "trainer")


@pytest.mark.parametrize("component", sorted(str(p.relative_to(CONFIGS)) for group in COMPONENT_GROUPS
                                             for p in (CONFIGS / group).glob("*.yaml")))
def test_every_component_config_loads(component, capsys):
    group = component.split("/")[0]
    config = _print_config(capsys, "--config", MAIN, f"--{group}", str(CONFIGS / component))
    loaded = yaml.safe_load((CONFIGS / component).read_text())
    if "class_path" in loaded:
        assert config[group]["class_path"] == loaded["class_path"]
    else:
        assert all(config[group][k] == v for k, v in loaded.items() if not isinstance(v, (dict, list)))


@pytest.mark.slow
def test_fit_then_test_end_to_end_with_mlflow(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    data = _small_data_config(tmp_path, synth_cache)
    assert main(["fit", "--config", MAIN, "--data", data, "--model.init_args.epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "synth_ucf_B" in out and "synth_ucf_A" in out and "AUC %" in out

    db = sqlite3.connect(tmp_path / "mlflow.db")
    (run_id, name, status), = db.execute("select run_uuid, name, status from runs").fetchall()
    assert name == "copra-synth_ucf_A_to_synth_ucf_B" and status == "FINISHED"
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
    assert params["model.class_path"] == "copra_bench.copra.COPRA"
    assert int(params["model.generator_params"]) > 0 and int(params["model.generated_lora_values"]) > 0
    assert params["data.init_args.target.init_args.domain"] == "B"
    assert params["conventions.ap_convention"] == "step"
    metrics = dict(db.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())
    tags = dict(db.execute("select key, value from tags where run_uuid=?", (run_id,)).fetchall())
    run_dir = Path(tags["run_dir"])
    artifacts = Path(db.execute("select artifact_uri from runs").fetchone()[0].replace("file://", ""))
    assert (artifacts / "config.yaml").is_file() and (artifacts / "metrics.json").is_file()
    assert sorted(p.name for p in (artifacts / "scores").iterdir()) == ["synth_ucf_A.npz", "synth_ucf_B.npz"]

    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    for name in ("synth_ucf_A", "synth_ucf_B"):
        videos = load_scores(run_dir / "scores" / f"{name}.npz")
        scores = np.concatenate([v.frame_scores for v in videos])
        gt = np.concatenate([v.gt for v in videos])
        assert abs(results[name]["step1"]["auc"] - roc_auc_score(gt, scores)) < 1e-6
        assert abs(results[name]["step1"]["ap"] - average_precision_score(gt, scores)) < 1e-6
        assert abs(metrics[f"test/{name}/step1/auc"] - results[name]["step1"]["auc"]) < 1e-6
        assert all(v.features is not None and v.features.shape[0] == v.window_scores.shape[0] for v in videos)
    assert (run_dir / "metrics.jsonl").read_text().count('"test/synth_ucf_A/step1/auc"') == 1


@pytest.mark.slow
def test_test_and_predict_subcommands(tmp_path, monkeypatch, synth_cache, empty_store, capsys):
    monkeypatch.chdir(tmp_path)
    copy_empty_store(empty_store, tmp_path / "mlflow.db")  # created by the end-to-end test above
    data = _small_data_config(tmp_path, synth_cache)
    assert main(["test", "--config", MAIN, "--data", data, "--allow_untrained", "true"]) == 0
    out = capsys.readouterr().out  # not a terminal: plain progress lines with totals, then the results table
    assert out.index("test synth_ucf_B: 2/2 batches (100%)") < out.index("test synth_ucf_A: ") < out.index("Results")
    assert main(["predict", "--config", MAIN, "--data", data, "--allow_untrained", "true"]) == 0
    predictions = list(Path("outputs").rglob("predictions/*.npz"))
    assert sorted(p.name for p in predictions) == ["synth_ucf_A.npz", "synth_ucf_B.npz"]
    assert all(v.frame_scores.shape == v.gt.shape for p in predictions for v in load_scores(p))


def test_unknown_config_key_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("class_path: copra_bench.baselines.FrozenVLM\ninit_args:\n  backbone_dtyp: float32\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", MAIN, "--model", str(bad), "--print_config"])
    assert exit_.value.code != 0
    assert "backbone_dtyp" in capsys.readouterr().err


def test_wrong_type_is_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", MAIN, "--trainer.max_epochs", "many", "--print_config"])
    assert exit_.value.code != 0
    assert "max_epochs" in capsys.readouterr().err


def test_missing_data_root_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", MAIN, "--data", str(CONFIGS / "data" / "ucf_crime.yaml"),
                 "--data.init_args.root", str(tmp_path / "no_ucf")])
    err = capsys.readouterr().err
    assert code == 2 and "no_ucf" in err and "data synth" in err
    assert not Path("outputs").exists(), "nothing may run before the data is found"


def test_wrong_checkpoint_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["test", "--config", MAIN, "--model.init_args.backbone", str(tmp_path / "Qwen2-VL-7B"),
                 "--allow_untrained", "true"])
    err = capsys.readouterr().err
    assert code == 2 and "Qwen2-VL-7B" in err and "tiny-qwen2-vl" in err


def test_unreachable_tracking_server_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", MAIN, "--trainer.logger.init_args.tracking_uri", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "http://127.0.0.1:9" in err and "unreachable" in err
    assert not Path("outputs").exists()


def test_data_synth_command(tmp_path, capsys):
    out = tmp_path / "ucf"
    assert main(["data", "synth", "--out", str(out), "--num-train-normal", "1", "--num-train-abnormal", "1",
                 "--num-test-normal", "1", "--num-test-abnormal", "1", "--fps", "8", "--min-seconds", "3",
                 "--max-seconds", "3", "--frame-size", "32", "--no-progress"]) == 0
    assert (out / "Anomaly_Detection_splits" / "Anomaly_Test.txt").read_text().count(".mp4") == 2
    assert main(["data"]) == 2


@pytest.mark.slow
def test_local_checkpoint_directory_gives_the_same_results(tmp_path, monkeypatch, synth_cache, empty_store):
    """A checkpoint is read from a local directory (as a real Qwen2-VL-7B would be), with identical scores."""
    from copra_bench.vlm import VLMBackbone

    monkeypatch.chdir(tmp_path)
    copy_empty_store(empty_store, tmp_path / "mlflow.db")
    checkpoint = VLMBackbone.load("tiny-qwen2-vl").save_pretrained(tmp_path / "my-qwen2-vl")
    data = _small_data_config(tmp_path, synth_cache)
    results = []
    for backbone in ("tiny-qwen2-vl", str(checkpoint)):
        assert main(["test", "--config", MAIN, "--data", data, "--model.init_args.backbone", backbone,
                     "--allow_untrained", "true"]) == 0
        newest = max(Path("outputs").glob("*/*/metrics.json"), key=lambda p: p.stat().st_mtime)
        results.append(json.loads(newest.read_text())["test"])
    for name in ("synth_ucf_A", "synth_ucf_B"):
        assert abs(results[0][name]["step1"]["auc"] - results[1][name]["step1"]["auc"]) < 1e-6


def test_omegaconf_interpolation_in_component_files(capsys, monkeypatch):
    monkeypatch.setenv("UCF_CRIME_ROOT", "/mnt/somewhere/UCF-Crime")
    config = _print_config(capsys, "--config", str(CONFIGS / "in_domain_ucf.yaml"))
    assert config["data"]["init_args"]["root"] == "/mnt/somewhere/UCF-Crime"


def test_tools_are_imported_only_when_they_run(tmp_path):
    """`fit --help`, `fit --print_config` and `--help` build the Lightning parser without importing any tool module
    (``--help`` still names every tool), and every entry of the tool table resolves to a function."""
    modules = sorted(entry.partition(":")[0] for entry in TOOLS.values())
    probe = (
        "import json, sys\n"
        "from copra_bench.cli import main\n"
        f"for args in (['fit', '--help'], ['fit', '--config', {MAIN!r}, '--print_config'], ['--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('LOADED', json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
        "import gc; gc.freeze()\n")  # a quick exit, as python -m copra_bench's
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = next(line for line in done.stdout.splitlines() if line.startswith("LOADED "))
    assert json.loads(loaded[len("LOADED "):]) == []
    assert all(f"'{name}'" in done.stdout for name in TOOLS)
    assert sorted(TOOLS) == ["data", "evaluate", "report", "sweep", "sync", "transfer"]
    assert all(callable(load_tool(name)) for name in TOOLS)


def test_unknown_tool_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluat", "--help"])
    assert exit_.value.code != 0
    assert "evaluat" in capsys.readouterr().err


def test_method_trainer_arguments_are_defaults_the_config_overrides(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    frozen = ["--config", MAIN, "--model", str(CONFIGS / "model" / "frozen_tiny.yaml"), "--trainer.logger", "false"]
    with caplog.at_level(logging.INFO, logger="copra_bench"):
        cli = CopraCLI(args=frozen, run=False)
    assert (cli.trainer.max_epochs, cli.trainer.num_sanity_val_steps) == (0, 0)  # FrozenVLM.trainer_arguments
    assert "overrides the method's default" not in caplog.text
    with caplog.at_level(logging.INFO, logger="copra_bench"):
        cli = CopraCLI(args=frozen + ["--trainer.max_epochs", "3"], run=False)
    assert (cli.trainer.max_epochs, cli.trainer.num_sanity_val_steps) == (3, 0)
    assert "trainer.max_epochs=3 from the config overrides the method's default 0" in caplog.text
    assert not Path("outputs").exists() and not Path("mlflow.db").exists()


def test_test_defaults_to_quiet(capsys):
    """RunArtifacts prints one table per test set, so Trainer.test's own table is off unless asked for."""
    for subcommand, verbose in (("test", False), ("validate", True)):
        with pytest.raises(SystemExit):
            main([subcommand, "--config", MAIN, "--print_config"])
        assert yaml.safe_load(capsys.readouterr().out)["verbose"] is verbose
    with pytest.raises(SystemExit):
        main(["test", "--config", MAIN, "--verbose", "true", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["verbose"] is True
