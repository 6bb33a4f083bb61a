"""``python -m copra_bench report --experiment <name> --out <dir> [--tracking-uri ...]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from copra_bench.report.build import build_document
from copra_bench.report.document import to_html, to_markdown
from copra_bench.report.runs import ReportError, load_runs


def write_report(experiment: str, out: str | Path, *, tracking_uri: str = "sqlite:///mlflow.db",
                 images: bool = True) -> tuple[Path, Path]:
    """Build ``<out>/leaderboard.md`` and ``<out>/leaderboard.html`` from the runs of ``experiment``.

    Raises:
        ReportError: unknown store or experiment, no finished run, or ``out`` cannot be written.
    """
    runs = load_runs(tracking_uri, experiment)
    doc = build_document(experiment, tracking_uri, runs, images=images)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        markdown, page = out / "leaderboard.md", out / "leaderboard.html"
        markdown.write_text(to_markdown(doc))
        page.write_text(to_html(doc))
    except OSError as err:
        raise ReportError(f"cannot write the report to {out}: {err}") from None
    return markdown, page


def report_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m copra_bench report",
        description="Leaderboard of an MLflow experiment: Markdown (to paste) and a self-contained HTML page "
                    "(opens offline). Runs with different protocol settings are never averaged together.")
    parser.add_argument("--experiment", default="copra_bench", help="MLflow experiment name (default copra_bench)")
    parser.add_argument("--out", required=True, help="output folder (leaderboard.md, leaderboard.html)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--no-images", action="store_true", help="do not embed ROC / timeline plots")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    markdown, page = write_report(args.experiment, args.out, tracking_uri=args.tracking_uri,
                                  images=not args.no_images)
    print(f"report: {markdown} and {page} ({time.perf_counter() - started:.1f} s)")
    return 0
