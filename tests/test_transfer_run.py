"""A transfer run as the user meets it: the runner with the built-in tiny VLM (adapted vs unadapted through the same
generate call), an unreadable video, the doctor, and (slow) the CLI end to end on the embedded default with MLflow
and the leaderboard's transfer section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from copra_bench.datamodules.synthetic.writers import write_mp4

from copra_bench.cli import main
from copra_bench.transfer.methods import TransferMethod, load_method
from copra_bench.transfer.runner import run_task
from copra_bench.transfer.task import TransferError
from copra_bench.transfer.vru_accident import VRUAccidentVQA

FIXTURES = Path(__file__).parent / "fixtures" / "transfer"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frozen() -> TransferMethod:
    return load_method(model=str(ROOT / "configs/model/frozen_tiny.yaml"))


@pytest.fixture()
def vru_root(tmp_path) -> Path:
    shutil.copytree(FIXTURES / "vru", tmp_path, dirs_exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("VRU_1", "VRU_2"):
        path = tmp_path / "VRU_videos" / "DoTA" / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(path, [rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)], fps=10)
    return tmp_path


class _Spy:
    """A static adaptation that records the clips it is entered with and shifts one LM layer's output."""

    def __init__(self, backbone) -> None:
        from copra_bench.rl.adaptations import LinearBiasAdaptation

        linear = backbone.language_model.layers[0].mlp.down_proj
        self.bias = LinearBiasAdaptation(linear, init_std=5.0)
        self.seen: list[int] = []

    def __call__(self, clips):
        self.seen.append(len(clips))
        assert all(tuple(c.shape[:1]) == (8,) for c in clips)  # the task's K frames of each document
        return self.bias(1)


def test_adapted_and_unadapted_answers_come_from_the_same_batched_generate(frozen, vru_root):
    task = VRUAccidentVQA(root=str(vru_root), subsets=["DoTA"])
    baseline = run_task(task, frozen, batch_size=5)
    assert list(baseline.variants) == ["adapted"]  # frozen: nothing to compare with
    spy = _Spy(frozen.backbone)
    adapted = TransferMethod("spy", frozen.module, spy, "test", {})
    outcome = run_task(task, adapted, batch_size=5, compare_unadapted=True)
    assert spy.seen == [5, 5, 2]  # one adaptation per batch of documents
    plain = [r.output for r in outcome.variants["unadapted"].results]
    assert plain == [r.output for r in baseline.variants["adapted"].results]  # the adaptation is off again
    assert plain != [r.output for r in outcome.variants["adapted"].results]
    metrics = outcome.variants["adapted"].metrics
    assert metrics["overall/n"] == 12 and "category/location/accuracy" in metrics and "subset/DoTA/accuracy" in metrics
    assert outcome.variants["adapted"].seconds_per_100_docs > 0


def test_an_unreadable_video_is_a_fault_and_its_questions_count_as_wrong(frozen, vru_root):
    (vru_root / "VRU_videos" / "DoTA" / "VRU_2.mp4").write_bytes(b"not a video")
    outcome = run_task(VRUAccidentVQA(root=str(vru_root), subsets=["DoTA"]), frozen, batch_size=8)
    kinds = [f.kind for f in outcome.run_faults]
    assert kinds == ["video_unreadable"] * 6
    results = outcome.variants["adapted"].results
    assert len(results) == 12 and all(r.score == 0.0 for r in results if "VRU_2" in r.doc_id)


def test_a_trained_method_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(TransferError, match="--ckpt_path"):
        load_method(model=str(ROOT / "configs/model/lora_grpo_tiny.yaml"))
    with pytest.raises(TransferError, match="neither a checkpoint file"):
        load_method(ckpt_path=str(tmp_path / "missing"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(TransferError, match="no checkpoints"):
        load_method(ckpt_path=str(tmp_path / "run"))


def test_the_doctor_lists_the_faults_and_fails(vru_root, tmp_path, capsys):
    config = tmp_path / "vqa.yaml"
    config.write_text(f"task:\n  class_path: copra_bench.transfer.vru_accident.VRUAccidentVQA\n  init_args:\n"
                      f"    root: {vru_root}\n    subsets: [DoTA]\n")
    assert main(["transfer", "inspect", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "12 documents" in out and "[options_unparsed]" in out and "[video_missing]" in out
    assert "by category:" in out and "target_invalid" in out


@pytest.mark.slow
def test_transfer_cli_end_to_end_on_the_embedded_default_with_mlflow_and_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COPRA_CACHE_DIR", str(tmp_path / "cache"))
    config = ROOT / "configs/transfer/synthetic_vqa.yaml"
    assert main(["transfer", "--config", str(config), "--model", str(ROOT / "configs/model/frozen_tiny.yaml"),
                 "--limit", "8", "--experiment", "t"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_vqa [adapted] accuracy" in out and "logged to MLflow run" in out
    folder = next((tmp_path / "outputs" / "transfer").iterdir())
    document = json.loads((folder / "metrics.json").read_text())
    assert document["protocol"]["num_frames"] == 8 and document["protocol"]["max_new_tokens"] == 10
    predictions = json.loads((folder / "predictions" / "adapted.json").read_text())
    assert len(predictions) == 8 and {"output", "parsed", "target", "groups"} <= set(predictions[0])
    assert (folder / "official" / "adapted" / "SYN_A_VQA_response.json").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("t").experiment_id])[0]
    assert run.data.tags["subcommand"] == "transfer" and run.data.params["transfer.num_frames"] == "8"
    assert "transfer/synthetic_vqa/adapted/overall/accuracy" in run.data.metrics
    assert main(["report", "--experiment", "t", "--out", "rep", "--tracking-uri", "sqlite:///mlflow.db"]) == 0
    report = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "Transfer: synthetic_vqa" in report and "| frozen" in report


def test_a_soft_prompt_adapts_the_transfer_prompts(vru_root):
    # prompt tuning adapts the prepared inputs (an input transform): the adapter must be on while they are prepared
    method = load_method(model=str(ROOT / "configs/model/prompt_tuning_tiny.yaml"), allow_untrained=True)
    assert method.adapter is not None
    outcome = run_task(VRUAccidentVQA(root=str(vru_root), subsets=["DoTA"]), method, batch_size=6, limit=6,
                       compare_unadapted=True)
    adapted, plain = ([r.output for r in outcome.variants[v].results] for v in ("adapted", "unadapted"))
    assert adapted != plain


def test_copra_from_a_run_directory_answers_with_its_generated_lora(vru_root, tmp_path):
    import torch
    import yaml

    from copra_bench.copra import COPRA

    model_config = yaml.safe_load((ROOT / "configs/model/copra_tiny.yaml").read_text())
    trained = COPRA(**model_config["init_args"])
    with torch.no_grad():  # stands in for training: a generator whose LoRA is far from zero
        for parameter in trained.model.generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    run = tmp_path / "outputs" / "1" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 3, "model": model_config}))
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)  # what fit writes: the trained tensors only
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")

    method = load_method(ckpt_path=str(run))
    assert method.name == "copra" and method.source.endswith("last.ckpt")
    loaded = dict(method.module.model.generator.named_parameters())
    assert all(torch.equal(loaded[k], v) for k, v in trained.model.generator.named_parameters())
    outcome = run_task(VRUAccidentVQA(root=str(vru_root), subsets=["DoTA"]), method, batch_size=6, limit=6,
                       compare_unadapted=True)
    adapted, plain = ([r.output for r in outcome.variants[v].results] for v in ("adapted", "unadapted"))
    assert adapted != plain
