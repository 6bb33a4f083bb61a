"""The leaderboard report from fake MLflow runs: metric parsing, averaging over seeds only, protocol groups,
cross-domain heatmap, paper numbers, missing artifacts, bad input."""

from __future__ import annotations

import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from copra_bench.cli import main
from copra_bench.report.aggregate import mean_std
from copra_bench.report.command import write_report
from copra_bench.report.runs import parse_metric_key

PROTOCOL = {"protocol.gt_end_inclusive": "False", "protocol.ap_primary": "step", "protocol.postprocess": "vera_code"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, MlflowClient, Path]:
    """One sqlite store for the module (creating its tables is the slow part); one experiment per test."""
    folder = tmp_path_factory.mktemp("report_store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, MlflowClient(uri), folder


def _experiment(store, name: str) -> str:
    _, client, folder = store
    return client.create_experiment(name, artifact_location=str(folder / "artifacts" / name))


def _run(store, experiment_id: str, *, method: str = "frozen", dataset: str = "synth_ucf_A", seed: int = 0,
         metrics: dict[str, float] | None = None, params: dict[str, str] | None = None, status: str = "FINISHED",
         tags: dict[str, str] | None = None, artifacts: dict[str, bytes] | None = None,
         protocol: bool = True) -> str:
    _, client, folder = store
    run = client.create_run(experiment_id, run_name=f"{method}-{dataset}-{seed}",
                            tags={"method": method, "dataset": dataset, **(tags or {})})
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param
    all_params = {"model.class_path": f"x.{method}", "seed_everything": str(seed), "data.name": dataset,
                  **(PROTOCOL if protocol else {}), **(params or {})}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in (metrics or {}).items()],
                     params=[Param(k, v) for k, v in all_params.items()])
    for name, payload in (artifacts or {}).items():
        path = folder / "src" / run_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        client.log_artifact(run_id, str(path), str(Path(name).parent) if "/" in name else None)
    client.set_terminated(run_id, status)
    return run_id


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.heated = 0

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v and not v.startswith("data:")]
        if tag == "td" and "hsl(" in (attrs.get("style") or ""):
            self.heated += 1

    def handle_data(self, data) -> None:
        self.text.append(data)


def squash(markdown: str) -> str:
    """The Markdown with table cells unpadded (``|  a   | b |`` -> ``| a | b |``), so rows can be matched."""
    return "\n".join(re.sub(r" *\| *", " | ", line).strip() if line.startswith("|") else line
                     for line in markdown.splitlines())


def _report(store, experiment: str, tmp_path: Path) -> tuple[str, _Page]:
    markdown, page = write_report(experiment, tmp_path / "out", tracking_uri=store[0])
    parsed = _Page()
    parsed.feed(page.read_text())
    assert not parsed.links, "the page must be self-contained"
    return squash(markdown.read_text()), parsed


def test_metric_keys_are_parsed_before_and_after_steps():
    assert parse_metric_key("test/ucf_crime/step2/auc") == ("ucf_crime", "step2", "auc")
    assert parse_metric_key("test/ucf_crime/auc") == ("ucf_crime", "step1", "auc")
    assert parse_metric_key("test/xd/step3/auc_class/Fighting") == ("xd", "step3", "auc_class/Fighting")
    assert parse_metric_key("val/video_auc") is None and parse_metric_key("test/xd") is None
    assert parse_metric_key("test/xd/step1") is None


def test_mean_std_matches_numpy():
    values = [0.61, 0.7, 0.655, float("nan")]
    stat = mean_std(values)
    assert stat.n == 3
    assert stat.mean == pytest.approx(np.mean(values[:3]))
    assert stat.std == pytest.approx(np.std(values[:3], ddof=1))
    assert mean_std([0.5]).std is None and mean_std([]).mean is None


def test_seeds_are_averaged_other_params_are_not(store, tmp_path):
    exp = _experiment(store, "seeds")
    aucs = [0.61, 0.70, 0.655]
    for seed, auc in enumerate(aucs):
        _run(store, exp, seed=seed, params={"model.init_args.rank": "8"},
             metrics={"test/synth_ucf_A/step1/auc": auc, "test/synth_ucf_A/step1/auc_ci_low": auc - 0.1,
                      "test/synth_ucf_A/step1/auc_ci_high": auc + 0.1, "test/synth_ucf_A/step3/auc": auc + 0.2})
    _run(store, exp, seed=0, params={"model.init_args.rank": "4"}, metrics={"test/synth_ucf_A/step1/auc": 0.9})
    markdown, _ = _report(store, "seeds", tmp_path)
    mean, std = 100 * statistics.fmean(aucs), 100 * statistics.stdev(aucs)
    low, high = 100 * (statistics.fmean(aucs) - 0.1), 100 * (statistics.fmean(aucs) + 0.1)
    board = markdown.split("Leaderboard: tested on synth_ucf_A")[1].split("**other metrics")[0]
    rank8 = next(line for line in board.splitlines() if "rank=8" in line)
    assert f"{mean:.2f} ± {std:.2f} [{low:.1f}, {high:.1f}]" in rank8 and "3 (0,1,2)" in rank8
    assert f"{100 * statistics.fmean(aucs) + 20:.2f}" in rank8  # the step3 column of the same row
    rank4 = next(line for line in board.splitlines() if "rank=4" in line)
    assert "| **90.00** ★ |" in rank4 and "±" not in rank4  # the highest AUC, no interval to tie with
    assert "Protocol group 1 (4 runs)" in markdown and "several protocol groups" not in markdown


def test_runs_with_different_protocols_are_never_averaged(store, tmp_path):
    exp = _experiment(store, "protocols")
    _run(store, exp, seed=0, metrics={"test/ucf/step1/auc": 0.60})
    _run(store, exp, seed=1, metrics={"test/ucf/step1/auc": 0.80},
         params={"protocol.gt_end_inclusive": "True"})
    _run(store, exp, seed=2, metrics={"test/ucf/auc": 0.70}, protocol=False)
    markdown, _ = _report(store, "protocols", tmp_path)
    assert "Why there are several protocol groups" in markdown
    assert re.search(r"\| protocol\.gt_end_inclusive \| .*False.*True", markdown) or \
        re.search(r"\| protocol\.gt_end_inclusive \| .*True.*False", markdown)
    for value in ("60.00", "80.00"):
        assert f"| {value} |" in markdown
    tables = markdown.split("## Why there are several protocol groups")[1].split("## Compared with the paper")[0]
    assert "±" not in tables, "nothing may be averaged across protocols"
    assert "70.00" not in markdown and "Runs without protocol params" not in markdown
    excluded = markdown.split("## Not in the tables (1 runs)")[1].split("\n## ")[0]
    assert "frozen-synth_ucf_A-2" in excluded and "no protocol.* params" in excluded


def test_runs_that_are_not_evaluations_are_listed_once_not_tabled(store, tmp_path):
    """Legacy runs (no protocol params), a predict run and a failed run: one line each under 'not in the tables',
    no protocol group of their own, no missing-artifact lines for them."""
    exp = _experiment(store, "legacy")
    _, client, _ = store
    legacy = []
    for seed, auc in enumerate((0.5, 0.6)):
        run_id = client.create_run(exp, run_name=f"old-{seed}").info.run_id
        client.log_param(run_id, "seed_everything", str(seed))
        client.log_param(run_id, "model.class_path", "copra_bench.baselines.FrozenVLM")
        client.log_metric(run_id, "test/synth/auc", auc)
        client.set_terminated(run_id, "FINISHED")
        legacy.append(run_id)
    predicted = _run(store, exp, seed=5, tags={"subcommand": "predict"}, protocol=False)
    failed = _run(store, exp, seed=6, status="FAILED", tags={"sweep.error": "Traceback\nRuntimeError: out of memory"})
    kept = _run(store, exp, seed=7, metrics={"test/synth/step1/auc": 0.7})
    markdown, page = _report(store, "legacy", tmp_path)
    assert "Runs without protocol params" not in markdown and "several protocol groups" not in markdown
    assert "Protocol group 1 (1 runs)" in markdown and "| 70.00 |" in markdown
    excluded = markdown.split("## Not in the tables (4 runs)")[1].split("\n## ")[0]
    for run_id, reason in ((legacy[0], "no protocol.* params"), (legacy[1], "no protocol.* params"),
                           (predicted, "predict run"), (failed, "status FAILED: RuntimeError: out of memory")):
        row = next(line for line in excluded.splitlines() if run_id in line)
        assert reason in row
        assert markdown.count(run_id) == 1, f"run {run_id} must be listed once"
    assert kept in markdown.split("## Runs in the tables")[1]
    assert f"{100 * statistics.fmean([0.5, 0.6]):.2f}" not in markdown


def test_cross_domain_heatmap_and_sweep_axis_tables(store, tmp_path):
    exp = _experiment(store, "matrix")
    values = {("A", "A"): 0.9, ("A", "B"): 0.6, ("B", "B"): 0.8, ("B", "A"): 0.5}
    for source, target in (("A", "B"), ("B", "A")):
        _run(store, exp, dataset=f"synth_{source}_to_synth_{target}",
             params={"data.init_args.source.init_args.domain": source},
             tags={"sweep.id": "fig3", "sweep.axes": f'{{"data.source": "{source}"}}'},
             metrics={f"test/synth_{t}/step1/auc": values[(source, t)] for t in ("A", "B")})
    markdown, page = _report(store, "matrix", tmp_path)
    table = markdown.split("**frozen: AUC %, step1**")[1].split("\n\n")[1]
    assert "| synth_A | 90.00 | 60.00 |" in table and "| synth_B | 50.00 | 80.00 |" in table
    assert page.heated >= 4
    axis = markdown.split("**axis data.source**")[1]
    assert "| A | Protocol group 1 | 1 | 90.00 |" in axis and "| B | Protocol group 1 | 1 | 50.00 |" in axis


def test_paper_numbers_beside_ours_are_labelled(store, tmp_path):
    exp = _experiment(store, "paper")
    _run(store, exp, dataset="ucf_crime", params={"model.init_args.backbone": "/models/Qwen2-VL-7B-Instruct"},
         metrics={"test/ucf_crime/step1/auc": 0.6})
    markdown, _ = _report(store, "paper", tmp_path)
    compared = markdown.split("## Compared with the paper")[1].split("**all numbers reported by the paper")[0]
    assert "59.36 (paper)" in compared and "81.31 (paper)" in compared and "69.73" not in compared  # frozen only
    ours = next(line for line in compared.splitlines() if "| this benchmark |" in line)
    assert "| 60.00 |" in ours and "ucf_crime → ucf_crime" in ours
    assert "(paper)" not in markdown.split("Leaderboard: tested on ucf_crime")[1].split("## ")[0]
    assert "**all numbers reported by the paper (14 rows, not reproduced here)**" in markdown


def test_missing_artifacts_are_reported_and_the_rest_is_built(store, tmp_path):
    exp = _experiment(store, "artifacts")
    png = b"\x89PNG\r\n\x1a\n" + b"fake image bytes"
    complete = _run(store, exp, metrics={"test/setA/step1/auc": 0.7, "test/setB/step1/auc": 0.6},
                    artifacts={"config.yaml": b"x: 1\n", "metrics.json": b"{}", "scores/setA.npz": b"",
                               "scores/setB.npz": b"", "plots/setA/curves.png": png,
                               "plots/setA/timelines.png": png})
    bare = _run(store, exp, seed=1, metrics={"test/setA/step1/auc": 0.8})
    markdown, page = _report(store, "artifacts", tmp_path)
    text = " ".join(page.text)
    assert len(page.images) == 2 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "missing: ROC curve of setB" in text and "missing: score timeline of setB" in text
    assert f"missing: artifact metrics.json of run {bare}" in text
    assert f"artifact metrics.json of run {complete}" not in text
    assert complete in text and bare in text and "75.00 ± 7.07" in markdown


def test_no_finished_runs_and_unknown_experiment_are_clear(store, tmp_path, capsys):
    exp = _experiment(store, "broken")
    _run(store, exp, status="FAILED", metrics={"test/x/step1/auc": 0.5})
    assert main(["report", "--experiment", "broken", "--tracking-uri", store[0], "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no finished runs" in err and "1 FAILED" in err
    assert main(["report", "--experiment", "nope", "--tracking-uri", store[0], "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "broken" in err
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "leaderboard.html").exists()


def test_axis_changing_a_protocol_param_gets_one_table_without_cross_group_averages(store, tmp_path):
    exp = _experiment(store, "granularity")
    aucs = {"window": (0.6, 0.7), "video": (0.8, 0.9)}
    for unit, values in aucs.items():
        for seed, auc in enumerate(values):
            _run(store, exp, seed=seed, params={"protocol.conditioning_unit": unit},
                 tags={"sweep.id": "t6", "sweep.axes": f'{{"model.granularity": "{unit}"}}'},
                 metrics={"test/ucf/step1/auc": auc})
    markdown, _ = _report(store, "granularity", tmp_path)
    assert "protocol.conditioning_unit" in markdown.split("Why there are several protocol groups")[1]
    axis = markdown.split("**axis model.granularity**")[1].split("\n\n")[1]
    rows = [line for line in axis.splitlines() if line.startswith("| window") or line.startswith("| video")]
    assert len(rows) == 2
    for unit, values in aucs.items():
        row = next(r for r in rows if r.startswith(f"| {unit}"))
        assert f"| 2 | {100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f} |" in row
