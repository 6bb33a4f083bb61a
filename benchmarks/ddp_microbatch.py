"""Micro-batched GRPO under DDP: the gradient of each step equals the unbatched one, and the ranks stay in step.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/ddp_microbatch.py

With ``loss_micro_batch`` the static LoRA + GRPO control calls ``manual_backward`` once per micro-batch (Lightning
prepares DDP's reducer before each, so each backward all-reduces what it added), and COPRA backpropagates the
micro-batches into detached copies of its generated LoRA and then once through the generator. This runs the CLI's
``ddp`` launcher on 2 CPU processes (gloo) for 3 GRPO steps of each method on the tiny backbone, without and with
micro-batches of 4 rows (G = 8: 4 micro-batches per input), records every rank's gradient of the trained parameters
before each optimiser step (:class:`GradientProbe`), and prints the relative difference of the gradient norms and
whether both ranks hold the same gradient. A correctness check, not a timing: the same on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SMALL_WORLD = {"num_train_normal": 3, "num_train_abnormal": 3, "num_test_normal": 1, "num_test_abnormal": 2,
               "video_fps": 8, "min_seconds": 4.0, "max_seconds": 6.0, "video_size": 48}  # tests' SMALL_WORLD
PROBE_ENV = "COPRA_GRADIENT_PROBE"


class GradientProbe(L.Callback):
    """Appends ``[step, rank, norm, sum]`` of the trained parameters' gradient to the file in $COPRA_GRADIENT_PROBE."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = [p.grad.detach().double().flatten() for p in pl_module.parameters()
                 if p.requires_grad and p.grad is not None]
        flat = torch.cat(grads)
        with open(os.environ[PROBE_ENV], "a") as fh:
            fh.write(json.dumps([trainer.global_step, trainer.global_rank, float(flat.norm()), float(flat.sum())])
                     + "\n")


def _fit(folder: Path, model: str, micro_batch: int | None) -> list[list[float]]:
    probe = folder / f"{model}-{micro_batch}.jsonl"
    extra = [] if micro_batch is None else ["--model.init_args.loss_micro_batch", str(micro_batch)]
    command = [sys.executable, "-m", "copra_bench", "fit", "--config", str(REPO / "configs/in_domain_synthetic.yaml"),
               "--model", str(REPO / f"configs/model/{model}_tiny.yaml"), "--data", str(folder / "data.yaml"),
               "--trainer", str(folder / "trainer.yaml"), "--trainer.strategy", "ddp", "--trainer.devices", "2",
               "--trainer.accelerator", "cpu", "--model.init_args.num_generations", "8",
               "--model.init_args.bootstrap_samples", "10", *extra,
               "--trainer.logger.init_args.tracking_uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--trainer.logger.init_args.local_dir", str(folder / "outputs")]
    env = {**os.environ, PROBE_ENV: str(probe), "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{model} micro-batch {micro_batch}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in probe.read_text().splitlines()]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ddp_microbatch_"))
    data = {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule",
            "init_args": {"domain": "A", **SMALL_WORLD, "cache_dir": str(folder / "cache"), "window_seconds": 2.0,
                          "frames_per_window": 4, "val_fraction": 0.34}}
    trainer = {"max_steps": 3, "log_every_n_steps": 1, "num_sanity_val_steps": 0, "limit_val_batches": 0,
               "enable_progress_bar": False, "callbacks": [{"class_path": "ddp_microbatch.GradientProbe"}]}
    (folder / "data.yaml").write_text(yaml.safe_dump(data))
    (folder / "trainer.yaml").write_text(yaml.safe_dump(trainer))
    print("| method | step | gradient norm, unbatched | micro-batches of 4: relative difference | ranks equal |")
    print("|---|---|---|---|---|")
    for model in ("lora_grpo", "copra"):
        plain, batched = _fit(folder, model, None), _fit(folder, model, 4)
        for step in sorted({r[0] for r in plain}):
            a = {r[1]: r for r in plain if r[0] == step}
            b = {r[1]: r for r in batched if r[0] == step}
            same = a[0][2:] == a[1][2:] and b[0][2:] == b[1][2:]
            print(f"| {model} | {step} | {a[0][2]:.6g} | {abs(b[0][2] - a[0][2]) / a[0][2]:.1e} | {same} |")


if __name__ == "__main__":
    main()
