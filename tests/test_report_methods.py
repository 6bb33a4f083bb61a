"""A 5-method report from real runs of the tiny default: the five method configs fitted (one epoch each) on a small
synthetic cross-domain world, plus a ``predict`` run, then ``report``. Checks the leaderboard's shape, that the
marked best is the method with the highest logged value (and ties follow the logged bootstrap intervals), and that
the predict run is listed once under 'not in the tables'."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from copra_bench.cli import main
from copra_bench.report.document import MAX_MD_CELL

from .conftest import REPO, copy_empty_store, small_cross_domain

METHODS = ("copra", "frozen", "prompt_tuning", "lora_sft", "lora_grpo")
TRAINED = {"epochs": "1"}
GRPO = {"num_generations": "4"}


class _Tables(HTMLParser):
    """Every ``<table>`` with the heading before it: headers, and body cells as (text, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.heading = ""
        self._cell: list | None = None
        self._in_heading = False

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag in ("h2", "h3", "h4"):
            self._in_heading, self.heading = True, ""
        elif tag == "table":
            self.tables.append({"heading": self.heading, "headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ["", (attrs.get("class") or "").split(), tag]

    def handle_endtag(self, tag) -> None:
        if tag in ("h2", "h3", "h4"):
            self._in_heading = False
        elif tag in ("td", "th") and self._cell is not None:
            text, classes, kind = self._cell
            table = self.tables[-1]
            (table["headers"] if kind == "th" else table["rows"][-1]).append((text.strip(), classes))
            self._cell = None

    def handle_data(self, data) -> None:
        if self._in_heading:
            self.heading += data
        if self._cell is not None:
            self._cell[0] += data


def _fit(common: list[str], method: str) -> None:
    extra = {} if method == "frozen" else {**TRAINED, **(GRPO if method in ("copra", "lora_grpo") else {})}
    args = ["fit", *common, "--model", str(REPO / "configs" / "model" / f"{method}_tiny.yaml")]
    args += [a for key, value in extra.items() for a in (f"--model.init_args.{key}", value)]
    assert main(args) == 0, method


@pytest.mark.slow
def test_five_method_report_from_real_runs(tmp_path, monkeypatch, synth_cache, empty_store):
    monkeypatch.chdir(tmp_path)
    copy_empty_store(empty_store, tmp_path / "mlflow.db")  # the runs' store (the config's sqlite:///mlflow.db)
    data = small_cross_domain(synth_cache, frames_per_window=2, frame_size=None)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    common = ["--config", str(REPO / "configs" / "cross_domain.yaml"), "--data", str(tmp_path / "data.yaml"),
              "--trainer.logger.init_args.experiment_name", "five", "--model.init_args.bootstrap_samples", "30",
              "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
    for method in METHODS:
        _fit(common, method)
    assert main(["predict", *common, "--model", str(REPO / "configs" / "model" / "frozen_tiny.yaml")]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("five").experiment_id])
    predict_id = next(r.info.run_id for r in runs if r.data.tags.get("subcommand") == "predict")
    logged = {r.data.tags["method"]: r.data.metrics for r in runs if r.info.run_id != predict_id}
    assert sorted(logged) == sorted(METHODS)

    assert main(["report", "--experiment", "five", "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "leaderboard.html").read_text()
    markdown = (tmp_path / "report" / "leaderboard.md").read_text()
    parsed = _Tables()
    parsed.feed(html)

    for test_set in ("synth_ucf_A", "synth_ucf_B"):
        board = next(t for t in parsed.tables if t["heading"] == f"Leaderboard: tested on {test_set}")
        headers = [h for h, _ in board["headers"]]
        assert headers[:4] == ["method", "variant", "trained on", "n (seeds)"] and len(headers) == 10
        rows = [r for r in board["rows"] if r]
        assert sorted(r[0][0] for r in rows) == sorted(METHODS), "one row per method x variant"
        assert all(r[1][0] == "-" and r[3][0] == "1 (0)" for r in rows)  # one variant, one seed each
        assert max(len(text) for r in rows for text, _ in r) <= 32, "short cells"
        for c, header in enumerate(headers[4:], start=4):
            metric, step = header.split(" % ")[0].lower(), header.split()[-1]
            key = f"test/{test_set}/{step}/{metric}"
            value = {m: logged[m][key] for m in METHODS}
            interval = {m: (logged[m][f"test/{test_set}/{step}/{metric}_ci_low"],
                            logged[m][f"test/{test_set}/{step}/{metric}_ci_high"]) for m in METHODS}
            top = max(METHODS, key=lambda m: value[m])
            overlapping = {m for m in METHODS if m != top and interval[m][0] <= interval[top][1]
                           and interval[top][0] <= interval[m][1]}
            marks = {r[0][0]: r[c][1] for r in rows}
            texts = {r[0][0]: r[c][0] for r in rows}
            assert all(texts[m].startswith(f"{100 * value[m]:.2f}") for m in METHODS), (header, texts)
            if overlapping:
                assert {m for m in METHODS if "tied" in marks[m]} == overlapping | {top}, (header, marks)
                assert not any("best" in marks[m] for m in METHODS)
            else:
                assert [m for m in METHODS if "best" in marks[m]] == [top], (header, marks)
                assert "★" in texts[top]

    excluded = markdown.split("## Not in the tables (1 runs)")[1].split("\n## ")[0]
    assert predict_id in excluded and "predict run" in excluded
    assert markdown.count(predict_id) == html.count(predict_id) == 1, "the predict run is listed once"
    assert "Runs without protocol params" not in markdown and "several protocol groups" not in markdown
    assert "No run matches a row of the paper's tables" in markdown  # tiny backbone: nothing of the paper's
    settings = markdown.split("### Method settings")[1].split("### Cross-domain matrix")[0]
    copra, frozen = settings.split("**copra:")[1].split("**frozen:")
    assert "model.generator_width: 64" in copra and "generator_width" not in frozen.split("**lora_grpo:")[0]
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert max(len(c.strip()) for line in table_lines for c in line.split("|")[1:-1]) <= MAX_MD_CELL
    assert Path(tmp_path / "report" / "leaderboard.html").stat().st_size < 5_000_000
