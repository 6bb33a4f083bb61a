"""``launcher: {kind: submitit, ...}``: the block is checked; past ``max_requeues`` a preempted job's run is FAILED
with a message; the full-matrix sweep files expand to 135 runs with matching axes and every cell x method parses.
The acceptance test (slow) sends the synthetic matrix slice as one job array through submitit's local executor, two
jobs at once, preempts one as SLURM does (the preemption signal to the job) and shows it requeued into the same
MLflow run with ``--ckpt_path last``, resumed to an uninterrupted run's per-step and test metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copra_bench.cli import main
from copra_bench.sweep.launcher_spec import LauncherError, parse_launcher
from copra_bench.sweep.spec import SweepSpec, display_value

from .conftest import REPO
from .sweep_fakes import db_runs

SWEEPS = REPO / "configs" / "sweeps"


@pytest.mark.parametrize(("block", "message"), [
    ({"kind": "slurm"}, "launcher.kind must be 'submitit'"), ({"kind": "submitit", "gpus": 1}, "unknown launcher"),
    ({"kind": "submitit", "timeout_min": "1h"}, "launcher.timeout_min must be minutes"),
    ({"kind": "submitit", "cluster": "pbs"}, "launcher.cluster must be one of"),
    ({"kind": "submitit", "max_requeues": -1}, "launcher.max_requeues must be"),
    ({"kind": "submitit", "setup": "module load cuda"}, "launcher.setup must be a list"),
    ({"kind": "submitit", "cluster": "local", "nodes": 2}, "nodes must be 1 with cluster: local")])
def test_bad_launcher_blocks_name_the_file_and_key(block, message):
    with pytest.raises(LauncherError, match=message) as err:
        parse_launcher(block, where="sweep file s.yaml")
    assert "sweep file s.yaml" in str(err.value)


def test_command_prefix_launchers_still_work_and_the_block_maps_to_executor_parameters():
    assert parse_launcher("srun python -m copra_bench", where="w") == (["srun", "python", "-m", "copra_bench"], None)
    assert parse_launcher(["python", "-m", "copra_bench"], where="w")[1] is None
    _, block = parse_launcher({"kind": "submitit", "partition": "gpu", "array_parallelism": 4, "setup": ["a"],
                               "slurm_additional_parameters": {"account": "p"}, "mem_gb": 64}, where="w")
    assert block.executor_parameters() == {
        "timeout_min": 60, "gpus_per_node": 1, "nodes": 1, "tasks_per_node": 1, "mem_gb": 64,
        "slurm_array_parallelism": 4, "slurm_partition": "gpu", "slurm_additional_parameters": {"account": "p"},
        "slurm_setup": ["a"]}


def test_the_matrix_sweeps_have_135_runs_and_the_same_axes():
    real, synthetic = (SweepSpec.load(SWEEPS / f"matrix_3x3_methods{s}.yaml") for s in ("", "_synthetic"))
    assert len(real.expand()) == len(synthetic.expand()) == 135
    assert list(real.grid) == list(synthetic.grid) == ["configs", "model", "seed_everything"]
    names = [[Path(p).name for p in spec.grid["configs"]] for spec in (real, synthetic)]
    assert names[0] == names[1] and len(set(names[0])) == 9
    methods = [[display_value(m).rsplit("_", 2)[0] if "qwen2vl" in m else display_value(m).rsplit("_", 1)[0]
                for m in spec.grid["model"]] for spec in (real, synthetic)]
    assert methods[0] == methods[1] == ["frozen", "prompt_tuning", "lora_sft", "lora_grpo", "copra"]
    assert real.submitit is not None and real.submitit.cluster == "slurm"


@pytest.mark.parametrize("name", ["matrix_3x3_methods.yaml", "matrix_3x3_methods_synthetic.yaml"])
def test_every_cell_and_method_of_the_matrix_parses(name, tmp_path, monkeypatch, capsys):
    """45 of the 135 runs (seed 0: every cell x method) through the real parser; the seed axis only changes
    seed_everything, checked by the axes test above."""
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--config", str(SWEEPS / name), "--dry-run", "--only", "seed_everything=0"]) == 0
    assert "45 runs, 0 already finished, 45 to run" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_inside_a_slurm_job_lightning_starts_the_runs_ddp_processes_itself(monkeypatch):
    """A job is one task running one run; with trainer.devices 2 Lightning's SLURMEnvironment would refuse
    (ntasks-per-node 1) and add its own SIGUSR1 requeue: the run's environment keeps Lightning from detecting SLURM."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from copra_bench.sweep.job import run_environment

    job = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "matrix", "SLURM_NNODES": "1",
           "PATH": os.environ.get("PATH", "")}
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    assert SLURMEnvironment.detect()  # what the run would see with the job's own environment
    env = run_environment(os.environ)
    for key, value in env.items():  # the run's environment
        monkeypatch.setenv(key, value)
    assert not SLURMEnvironment.detect() and env["SLURM_NTASKS"] == "1"
    assert "SLURM_JOB_NAME" not in run_environment({"PATH": "/bin"})  # outside SLURM: nothing changes


def test_past_max_requeues_the_run_is_failed_with_a_message(tmp_path):
    """checkpoint() (what submitit calls on the preemption signal) of a job already requeued max_requeues times:
    no DelayedSubmission (submitit then ends the job), the run FAILED saying why and what to do; below the limit it
    returns a DelayedSubmission of the job with the requeue counted, the run KILLED."""
    from submitit.helpers import DelayedSubmission

    from copra_bench.sweep.job import SweepJob
    from copra_bench.sweep.store import SweepStore

    store = SweepStore(f"sqlite:///{tmp_path / 'mlflow.db'}", "e")
    jobs = []
    for max_requeues in (1, 0):
        run_id = store.create_run("r", {"sweep.id": "t"})
        jobs.append((run_id, SweepJob(sweep_id="t", index=0, config_hash="h", subcommand="fit", command=["x"],
                                      tracking_uri=store.tracking_uri, experiment_name="e", run_id=run_id,
                                      log=str(tmp_path / "log"), claims_dir=str(tmp_path), max_requeues=max_requeues)))
    (again_id, again), (failed_id, failed) = jobs
    delayed = again.checkpoint()
    assert isinstance(delayed, DelayedSubmission) and delayed.function is again and again.requeues == 1
    assert store.client.get_run(again_id).info.status == "KILLED"
    assert store.client.get_run(again_id).data.tags["sweep.requeues"] == "1"
    assert failed.checkpoint() is None
    run = store.client.get_run(failed_id)
    assert run.info.status == "FAILED" and run.data.tags["sweep.requeues"] == "1"
    assert "more than launcher.max_requeues=0" in run.data.tags["sweep.error"] and "raise max_requeues" in \
        run.data.tags["sweep.error"]


# ------------------------------------------------------------------------------------ acceptance (slow, real runs)

def _small_cell(tmp_path: Path, cache: Path) -> list[str]:
    """``--set`` options shrinking the matrix cell ucf_crime_to_xd_violence to SMALL_WORLD (COPRA, batch 1, 8 steps,
    last.ckpt every 2 steps, the tests' trainer), the cell's own protocol keys kept."""
    from .conftest import SMALL_WORLD
    from .faults import write_job

    job = write_job(tmp_path / "job", cache)
    member = {**SMALL_WORLD, "cache_dir": str(cache)}
    source = {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule", "init_args": {"domain": "A",
                                                                                                  **member}}
    target = {"class_path": "copra_bench.datamodules.SyntheticXDViolenceDataModule", "init_args": {"domain": "B",
                                                                                                    **member}}
    sets = {"data.init_args.source": json.dumps(source), "data.init_args.target": json.dumps(target),
            "data.init_args.window_seconds": "2.0", "data.init_args.frames_per_window": "4",
            "data.init_args.batch_size": "1", "data.init_args.val_fraction": "0.34",
            "data.init_args.test_on_source": "false", "trainer": job[job.index("--trainer") + 1],
            "model.init_args.epochs": "100", "model.init_args.bootstrap_samples": "50",
            "trainer.logger.init_args.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "trainer.logger.init_args.local_dir": str(tmp_path / "outputs")}
    return [a for key, value in sets.items() for a in ("--set", key, value)]


def point_id(sweep: Path) -> str:
    return SweepSpec.load(sweep).sweep_id


def _train_metrics(run_dir: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        values = {k: v for k, v in record.items() if k.startswith("train/") and "timing" not in k}
        if values:
            assert record["step"] not in out, "a step was logged twice"
            out[record["step"]] = values
    return out


@pytest.mark.slow
def test_acceptance_matrix_slice_on_submitit_preempted_job_resumes_to_the_same_numbers(tmp_path, monkeypatch,
                                                                                     synth_cache, capsys):
    """The synthetic matrix sweep (COPRA on one cell, seeds 0 and 1, shrunk) through submitit's local executor, two
    jobs at once; seed 0's job is preempted mid-fit (USR2, as SLURM sends it): requeued (tag, --status, its second
    start with --ckpt_path last in the same MLflow run), job ids tagged and in jobs.json, resumed to the same
    per-step training metrics and test metrics as an uninterrupted run of that point; submitting again is a no-op."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "matrix.yaml"
    text = (SWEEPS / "matrix_3x3_methods_synthetic.yaml").read_text().replace("configs/", f"{REPO}/configs/")
    sweep.write_text(text + f"launcher: {{kind: submitit, cluster: local, gpus_per_node: 0, timeout_min: 30, "
                     f"folder: {tmp_path / 'submitit'}}}\n")
    options = ["--only", "configs=ucf_crime_to_xd_violence.yaml", "--only", "model=copra_tiny.yaml",
               "--max-runs", "2", *_small_cell(tmp_path, synth_cache)]
    process = subprocess.Popen([sys.executable, "-m", "copra_bench", "sweep", "--config", str(sweep), "--wait",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, claim, run_dir = time.time() + 400, None, None
    while time.time() < deadline and run_dir is None:
        assert process.poll() is None, process.communicate()[0]
        for path in tmp_path.glob("mlflow.db.claims/*/*.claim"):
            record = json.loads(path.read_text() or "{}")
            if record.get("index") == 27:  # seed 0 of COPRA on the cell: grid index 1 * 15 + 4 * 3 + 0
                claim = record
        runs = {t.get("sweep.index"): t for _, _, t in (db_runs(tmp_path / "mlflow.db") if claim else [])}
        seed0 = runs.get(str(claim["index"])) if claim else None
        if seed0 and seed0.get("run_dir") and (Path(seed0["run_dir"]) / "metrics.jsonl").is_file() and \
                len(_train_metrics(Path(seed0["run_dir"]))) >= 3:
            run_dir = Path(seed0["run_dir"])
        time.sleep(0.3)
    assert run_dir is not None, "seed 0's run did not reach step 3"
    os.kill(int(claim["pid"]), signal.SIGUSR2)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-4000:]
    assert "submitted 2 job(s)" in output and "requeued 1 time(s)" in output, output[-4000:]
    runs = db_runs(tmp_path / "mlflow.db")
    assert sorted(s for _, s, _ in runs) == ["FINISHED", "FINISHED"] and len(runs) == 2
    tags = {run_id: t for run_id, _, t in runs}
    (preempted,) = [run_id for run_id, t in tags.items() if t["run_dir"] == str(run_dir)]
    assert tags[preempted]["sweep.requeues"] == "1" and {t.get("sweep.requeues") for t in tags.values()} == {"0", "1"}
    log = Path(tags[preempted]["sweep.log"]).read_text()
    starts = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(starts) == 2 and "--ckpt_path last" not in starts[0] and starts[1].endswith("--ckpt_path last")
    assert f"--trainer.logger.init_args.run_id {preempted}" in starts[1], "resumed in the same MLflow run"
    jobs = json.loads((tmp_path / "outputs" / "sweeps" / point_id(sweep) / "jobs.json").read_text())
    assert sorted(j["run_id"] for j in jobs.values()) == sorted(tags)
    assert all(tags[j["run_id"]]["sweep.job_id"] == j["job_id"] for j in jobs.values())
    capsys.readouterr()
    slice_options = [*options[:4], *options[6:]]
    assert main(["sweep", "--config", str(sweep), "--status", *slice_options]) == 0
    status = capsys.readouterr().out
    assert "finished  (requeued 1x)" in status and "3 points: 2 finished, 1 queued; 1 requeue(s)" in status
    assert main(["sweep", "--config", str(sweep), *slice_options, "--only", "seed_everything=0"]) == 0
    assert "1 runs, 1 already finished, 0 queued or running, 0 to submit" in capsys.readouterr().out  # again: no-op

    reference = tmp_path / "reference"
    point = SweepSpec.load(sweep)
    from copra_bench.sweep.plan import prepare

    args = next(r for r in prepare(point, only=["configs=ucf_crime_to_xd_violence.yaml", "model=copra_tiny.yaml",
                                                "seed_everything=0"],
                                    overrides=dict(zip(options[7::3], options[8::3], strict=True)))).args
    code = main(["fit", *args, "--trainer.logger.init_args.experiment_name", "reference",
                 "--trainer.logger.init_args.local_dir", str(reference)])
    assert code == 0
    (reference_dir,) = [p.parent for p in reference.rglob("metrics.jsonl")]
    assert _train_metrics(run_dir) == _train_metrics(reference_dir) and len(_train_metrics(run_dir)) == 8
    results = [json.loads((d / "metrics.json").read_text())["test"] for d in (run_dir, reference_dir)]
    assert results[0] == results[1]


def test_a_slurm_sweep_is_one_sbatch_job_array_with_the_launcher_settings(tmp_path, monkeypatch, capsys):
    """cluster: slurm with stand-ins for srun and sbatch on PATH (no SLURM here): submitit writes one sbatch script
    for the whole grid (--array=0-2%2, partition, signal USR2@90, setup lines, sbatch extras); every point's run is
    SCHEDULED with its array job id (tag, jobs.json) and --status lists them queued with their job; submitting again
    leaves the jobs sacct reports alive and resends the ended one in its run."""
    from .sweep_fakes import fake_launcher, sweep_file

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" >> {tmp_path / "sbatch_scripts"}\n'
                                    'echo "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    launcher = {"kind": "submitit", "cluster": "slurm", "partition": "gpu", "array_parallelism": 2, "mem_gb": 64,
                "timeout_min": 600, "setup": ["source .venv/bin/activate"],
                "slurm_additional_parameters": {"account": "vad"}, "command": fake_launcher(tmp_path, monkeypatch)}
    path = sweep_file(tmp_path, [0, 1, 2], launcher=launcher, configs=[str(REPO / "configs" / "cross_domain.yaml")])
    assert main(["sweep", "--config", str(path)]) == 0
    assert "submitted 3 job(s): 4242_0 4242_1 4242_2" in capsys.readouterr().out
    script = (tmp_path / "sbatch_scripts").read_text()
    assert script.count("#!/bin/bash") == 1, "one sbatch for the whole grid"
    for line in ("--array=0-2%2", "--partition=gpu", "--signal=USR2@90", "--time=600", "--mem=64GB",
                 "--account=vad", "--gpus-per-node=1", "source .venv/bin/activate"):
        assert line in script
    runs = db_runs(tmp_path / "mlflow.db")
    assert [s for _, s, _ in runs] == ["SCHEDULED"] * 3
    assert sorted(t["sweep.job_id"] for _, _, t in runs) == ["4242_0", "4242_1", "4242_2"]
    jobs = json.loads((tmp_path / "outputs" / "sweeps" / "t" / "jobs.json").read_text())
    assert sorted(j["job_id"] for j in jobs.values()) == ["4242_0", "4242_1", "4242_2"]
    assert main(["sweep", "--config", str(path), "--status"]) == 0
    status = capsys.readouterr().out
    assert "job 4242_0" in status and "job 4242_2" in status and "3 points: 3 queued" in status
    (bin_dir / "sacct").write_text("#!/bin/sh\nprintf 'JobID|State\\n4242_0|COMPLETED\\n4242_1|PENDING\\n"
                                   "4242_2|RUNNING\\n'\n")
    (bin_dir / "sacct").chmod(0o755)
    capsys.readouterr()
    assert main(["sweep", "--config", str(path)]) == 0  # again: the live jobs are left alone, the ended one resent
    out = capsys.readouterr().out
    assert "2 queued or running, 1 to submit" in out and "submitted 1 job(s): 4242;" in out, out  # one: no array
    assert len(db_runs(tmp_path / "mlflow.db")) == 3, "the resent point keeps its run"
