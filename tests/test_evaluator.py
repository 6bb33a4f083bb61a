"""The evaluator a BenchModule owns: a test set's protocol comes from its family (never its name), failed sets are
raised only after the sinks saved the others, validation AUC is the reference one; the run-results writer puts
every file where the report and ``evaluate`` look for it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from copra_bench.datamodules import (
    CrossDomainDataModule,
    MultiSourceDataModule,
    ShanghaiTechDataModule,
    SyntheticShanghaiTechDataModule,
    SyntheticUCFCrimeDataModule,
    SyntheticXDViolenceDataModule,
    UCFCrimeDataModule,
    VideoRecord,
    XDViolenceDataModule,
)
from copra_bench.datamodules.base import TestSet as NamedTestSet

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import load_meta
from copra_bench.evaluation.evaluator import Evaluator, ResultSink, VideoAUCMetric
from copra_bench.evaluation.metrics import video_auc
from copra_bench.evaluation.postprocess import PRESETS
from copra_bench.evaluation.protocol import EvaluationSettings
from copra_bench.tracking import RunResultsWriter
from copra_bench.windows import WindowSpec, num_windows

STRIDE = 4


def _test_set(name: str, family: str, seed: int = 0) -> NamedTestSet:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(6):
        n = int(rng.integers(20, 40))
        gt = np.zeros(n, np.uint8)
        if i % 2:
            gt[n // 3:2 * n // 3] = 1
        records.append(VideoRecord(name=f"v{i}", path=None, label=i % 2, classes=("Abuse",) if i % 2 else ("Normal",),
                                   num_frames=n, fps=8.0, gt=gt))
    return NamedTestSet(name, records, WindowSpec(stride=STRIDE), family)


def _feed(evaluator: Evaluator, index: int, test_set: NamedTestSet, *, drop_last: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for v, record in enumerate(test_set.records):
        count = num_windows(record.num_frames, stride=STRIDE) - (1 if drop_last and v == 0 else 0)
        evaluator.add(index, torch.full((count,), v), torch.arange(count),
                      torch.tensor(rng.random(count), dtype=torch.float32),
                      torch.tensor(rng.normal(size=(count, 8)), dtype=torch.float32))


def _evaluate(*test_sets: NamedTestSet, postprocess: str = "vera_code", broken: str = "") -> Evaluator:
    evaluator = Evaluator(EvaluationSettings(postprocess=postprocess, bootstrap_samples=0))
    evaluator.start(list(test_sets), torch.device("cpu"))
    for i, ts in enumerate(test_sets):
        _feed(evaluator, i, ts, drop_last=ts.name == broken, seed=i)
    evaluator.evaluate()
    return evaluator


def test_a_test_set_named_like_another_dataset_keeps_its_own_family():
    looks_xd, looks_ucf = _test_set("xd_violence_street", "ucf_crime"), _test_set("synth_ucf_A", "xd_violence")
    results = _evaluate(looks_xd, looks_ucf).outcome.results
    ucf, xd = results["xd_violence_street"].evaluation, results["synth_ucf_A"].evaluation
    assert (ucf.family, ucf.ap_primary, ucf.params) == ("ucf_crime", "step", PRESETS["vera_code"]["ucf_crime"])
    assert (xd.family, xd.ap_primary, xd.params) == ("xd_violence", "trapz", PRESETS["vera_code"]["xd_violence"])
    # a preset that forces a dataset still wins over the test set's family
    forced = _evaluate(looks_xd, postprocess="vera_paper:xd_violence").outcome.results["xd_violence_street"]
    assert forced.evaluation.family == "xd_violence" and forced.family == "ucf_crime"


def test_the_sinks_save_the_sets_that_succeeded_before_the_failed_ones_raise():
    events: list[str] = []

    class Recorder(ResultSink):
        def save_test_outcome(self, trainer, outcome):
            events.append("saved " + ",".join(outcome.results))

        def save_predictions(self, trainer, predictions):
            events.append("predictions")

    evaluator = _evaluate(_test_set("good", "generic"), _test_set("bad", "generic", seed=1), broken="bad")
    assert set(evaluator.outcome.results) == {"good"} and "windows have no score" in evaluator.outcome.errors["bad"]
    with pytest.raises(EvaluationError, match="evaluation failed for bad: bad/v0: 1 of"):
        evaluator.publish_test(SimpleNamespace(callbacks=[object(), Recorder()]))
    assert events == ["saved good"]


def test_validation_auc_is_the_reference_video_auc():
    metric = VideoAUCMetric()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert metric.compute() is None  # no clip scored: nothing is logged
    scores, labels = torch.tensor([0.2, 0.9, 0.4, 0.7, 0.1]), torch.tensor([0, 1, 0, 1, 1])
    metric.update(scores[:2], labels[:2])
    metric.update(scores[2:], labels[2:])
    expected = video_auc(np.array(scores.tolist()), np.array(labels.tolist()))
    assert metric.compute() == expected


def test_datamodules_name_their_test_sets_families_without_loading_them(tmp_path):
    assert (UCFCrimeDataModule.dataset_family, XDViolenceDataModule.dataset_family,
            ShanghaiTechDataModule.dataset_family) == ("ucf_crime", "xd_violence", "shanghaitech")
    world = {"cache_dir": str(tmp_path)}  # nothing is generated: families need no videos
    ucf, xd = SyntheticUCFCrimeDataModule(domain="A", **world), SyntheticXDViolenceDataModule(domain="B", **world)
    sh = SyntheticShanghaiTechDataModule(domain="C", **world)
    assert ucf.test_set_families() == {"synth_ucf_A": "synthetic"} and xd.dataset_family == "synthetic"
    cross = CrossDomainDataModule(ucf, xd)
    assert list(cross.test_set_families().items()) == [("synth_ucf_A", "synthetic"), ("synth_xd_B", "synthetic")]
    assert list(CrossDomainDataModule(ucf, xd, test_on_source=False).test_set_families()) == ["synth_xd_B"]
    multi = MultiSourceDataModule([ucf, xd], sh, test_on_sources=True)
    assert list(multi.test_set_families()) == ["synth_ucf_A", "synth_xd_B", "synth_sh_C"]
    assert list(MultiSourceDataModule([ucf, xd], sh).test_set_families()) == ["synth_sh_C"]
    conventions = Evaluator(EvaluationSettings()).conventions({"a_to_xd": "ucf_crime", "b": "xd_violence"})
    assert conventions["ap_convention"] == "a_to_xd=step,b=trapz"


class _Uploads:
    def __init__(self) -> None:
        self.artifacts: list[tuple[str, str | None]] = []
        self.params: dict[str, str] = {}
        self.run_id = "r"
        self.experiment = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(params={})))

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append((path.name, artifact_path))

    def log_params(self, params) -> None:
        self.params.update(params)


def test_writer_puts_every_file_where_evaluate_and_the_report_read_it(tmp_path):
    outcome = _evaluate(_test_set("ts", "shanghaitech")).outcome
    results = list(outcome.results.values())
    for root, folder in (("", None), ("evaluate/vera_code", "evaluate/vera_code")):
        uploads = _Uploads()
        writer = RunResultsWriter(tmp_path / (root or "run"), uploads, artifact_root=root)
        writer.save_test(results, protocol={"postprocess": "vera_code"}, conventions={} if not root else None)
        assert ("metrics.json", folder) in uploads.artifacts
        assert ("curves.png", "/".join(p for p in (root, "plots/ts") if p)) in uploads.artifacts
        assert uploads.params == {"protocol.postprocess": "vera_code"}
    assert ("ts.npz", "evaluate/vera_code/scores") in uploads.artifacts
    assert str(load_meta(tmp_path / "run" / "scores" / "ts.npz")["dataset_family"]) == "shanghaitech"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) == {"test", "protocol", "conventions", "timing"}
    assert saved["test"]["ts"]["dataset"] == "shanghaitech"


def test_ap_convention_follows_the_preset_not_only_the_dataset():
    """``conventions.ap_convention`` names the AP the preset reports as primary (vadclip: its own step AP on
    XD-Violence too, where vera_code reports XDVioDet's trapezoid AP)."""
    from copra_bench.evaluation.evaluator import Evaluator
    from copra_bench.evaluation.protocol import EvaluationSettings

    families = {"ucf": "ucf_crime", "xd": "xd_violence"}
    assert Evaluator(EvaluationSettings(postprocess="vera_code")).conventions(families)["ap_convention"] == \
        "ucf=step,xd=trapz"
    assert Evaluator(EvaluationSettings(postprocess="vadclip")).conventions(families)["ap_convention"] == "step"
    assert Evaluator(EvaluationSettings(postprocess="vera_code,ap=trapz")).conventions(families)[
        "ap_convention"] == "trapz"


def test_the_vision_budget_is_a_protocol_parameter():
    """A frame / pixel budget in ``backbone_options`` changes the numbers, so it is recorded (``protocol.*``) and
    runs that differ in it are never averaged; without one the processor's default is named."""
    from copra_bench.baselines.frozen import FrozenVLM

    size = {"shortest_edge": 100352, "longest_edge": 150528}
    budgeted = FrozenVLM(backbone_options={"video_kwargs": {"size": size}}).input_protocol()
    assert json.loads(budgeted["vision_budget"]) == {"video_kwargs": {"size": size}}
    assert FrozenVLM().input_protocol() == {"vision_budget": "processor default"}


def test_frames_stay_on_the_host_and_the_rest_of_a_batch_moves():
    """Only the processor reads a batch's frames, on the CPU: they are not copied to the device (and back)."""
    from copra_bench.baselines.frozen import FrozenVLM

    module = FrozenVLM()
    frames = torch.zeros(2, 8, 4, 4, 3, dtype=torch.uint8)
    batch = {"frames": frames, "condition_frames": [frames[0]], "label": torch.tensor([0, 1])}
    moved = module.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert list(moved) == list(batch)
    assert moved["frames"] is frames and moved["condition_frames"][0].device.type == "cpu"
    assert moved["label"].device.type == "meta"
    assert module.transfer_batch_to_device({"x": torch.ones(1)}, torch.device("meta"), 0)["x"].is_meta
