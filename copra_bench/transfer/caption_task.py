"""What every captioning task shares: the output is the caption, the metrics are corpus-level per group.

A subclass reads its files (:meth:`TransferTask.load`) and names its ``group_keys`` and its METEOR
(``primary_meteor``: ``meteor_nltk`` for VRU-Accident, ``meteor_java`` for HIVAU); ``overall/meteor`` is that one
when it could run, else the other, and :attr:`CaptionTask.metric_info` says which implementation produced each
number and which metrics were unavailable (and why) in the last :meth:`aggregate`.
"""

from __future__ import annotations

from typing import Any

from .caption_metrics import (
    CaptionMetricSettings,
    CocoScorer,
    MetricUnavailable,
    caption_metrics,
)
from .multiple_choice import metric_name
from .task import DocResult, Document, Fault, TransferError, TransferTask

__all__ = ["CaptionTask"]


def _hypothesis(result: DocResult) -> str:
    # An empty hypothesis breaks the PTB tokeniser / METEOR; score it as a single space (no overlap at all)
    return result.parsed if result.parsed else " "


class CaptionTask(TransferTask):
    """Base of the captioning tasks (see the module docstring)."""

    kind = "caption"
    primary_meteor = "meteor_java"

    def set_metric_settings(self, metrics: dict | None) -> None:
        try:
            self.metric_settings = CaptionMetricSettings(**dict(metrics or {}))
        except TypeError as err:
            raise TransferError(f"task.init_args.metrics: {err} (fields: rouge, coco, nltk_meteor, "
                                "spice_corenlp_dir, comet_checkpoint)") from None
        self.metric_info: dict[str, Any] = {}

    def process_result(self, doc: Document, output: str) -> DocResult:
        caption = output.strip()
        faults = [] if caption else [Fault("empty_output", doc.doc_id, "the model wrote nothing: scored as an empty "
                                                                       "caption")]
        return DocResult(doc.doc_id, output, caption, doc.target, dict(doc.groups), None, doc.key, faults=faults)

    def _scores(self, results: list[DocResult], prefix: str, coco: CocoScorer | None,
                indices: list[int]) -> dict[str, float]:
        refs = [r.target for r in results]
        hyps = [_hypothesis(r) for r in results]
        values, impl, unavailable = caption_metrics(refs, hyps, self.metric_settings, prefix=prefix, coco=coco,
                                                    indices=indices)
        if prefix == "overall/":
            self.metric_info = {"implementations": impl, "unavailable": unavailable}
        meteor = values.get(f"{prefix}{self.primary_meteor}")
        other = "meteor_java" if self.primary_meteor == "meteor_nltk" else "meteor_nltk"
        if meteor is None:
            meteor = values.get(f"{prefix}{other}")
        if meteor is not None:
            values[f"{prefix}meteor"] = meteor
        values[f"{prefix}n"] = float(len(results))
        return values

    def aggregate(self, results: list[DocResult]) -> dict[str, float]:
        if not results:
            return {}
        coco = None
        if self.metric_settings.coco:
            try:
                coco = CocoScorer([r.target for r in results], [_hypothesis(r) for r in results])
            except MetricUnavailable:
                coco = None  # caption_metrics then reports the pycocoevalcap set unavailable, with the reason
        try:
            return self._aggregate(results, coco)
        finally:
            if coco is not None:
                coco.close()

    def _aggregate(self, results: list[DocResult], coco: CocoScorer | None) -> dict[str, float]:
        out = self._scores(results, "overall/", coco, list(range(len(results))))
        info = self.metric_info
        used = self.primary_meteor if self.primary_meteor not in info.get("unavailable", {}) else (
            "meteor_java" if self.primary_meteor == "meteor_nltk" else "meteor_nltk")
        info["meteor"] = f"overall/meteor is {used}" + ("" if used == self.primary_meteor else
                                                        f" ({self.primary_meteor}, the benchmark's own, unavailable)")
        for key in self.group_keys:
            values = sorted({r.groups.get(key, "") for r in results})
            if len(values) < 2 and key != self.group_keys[0]:
                continue
            for value in values:
                indices = [i for i, r in enumerate(results) if r.groups.get(key, "") == value]
                out.update(self._scores([results[i] for i in indices], f"{key}/{metric_name(value)}/", coco,
                                        indices))
        self.metric_info = info
        return out

    def protocol(self) -> dict[str, Any]:
        settings = self.metric_settings
        return {**super().protocol(), "metrics.rouge": settings.rouge, "metrics.coco": settings.coco,
                "metrics.nltk_meteor": settings.nltk_meteor, "metrics.primary_meteor": self.primary_meteor,
                "metrics.spice": bool(settings.spice_corenlp_dir), "metrics.comet": bool(settings.comet_checkpoint)}
