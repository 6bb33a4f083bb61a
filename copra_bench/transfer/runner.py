"""Run a task's documents through a method: frames, batched greedy answers (adapted and, on request, not), results.

:func:`run_task` decodes each document's K frames once (its video or span, by seeking), answers in batches of
``batch_size`` with the method's adapter (:mod:`copra_bench.transfer.generation`), parses every output with the
task, and aggregates per variant: ``adapted`` (the method as trained; for frozen, the frozen VLM) and, with
``compare_unadapted``, ``unadapted`` (the same backbone with no adaptation, same frames and prompts). A video that
cannot be read is a fault, and its documents are scored as unanswered (wrong / empty caption), never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from copra_bench.datamodules.video_io import VideoInfo, probe_video
from copra_bench.errors import DataError

from .frames import frame_indices, read_document_frames
from .generation import choose_letters, generate_answers
from .methods import TransferMethod
from .multiple_choice import LETTERS
from .task import DocResult, Document, Fault, TaskData, TransferTask

__all__ = ["TransferOutcome", "VariantOutcome", "run_task"]


@dataclass
class VariantOutcome:
    """One variant's results, metrics and timing."""

    results: list[DocResult]
    metrics: dict[str, float]
    generate_s: float
    metric_info: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_100_docs(self) -> float:
        return 100.0 * self.generate_s / max(len(self.results), 1)


@dataclass
class TransferOutcome:
    """Everything one transfer run computed."""

    task: TransferTask
    data: TaskData
    variants: dict[str, VariantOutcome]
    run_faults: list[Fault]
    decode_s: float

    def all_faults(self) -> list[Fault]:
        output = [f for v in self.variants.values() for r in v.results for f in r.faults]
        return self.data.faults + self.run_faults + output


class _Frames:
    """Each document's frames, decoded once per (video, span), the last few kept (questions share a video)."""

    def __init__(self, task: TransferTask, size: int | None, keep: int = 16) -> None:
        self.task, self.size, self.keep = task, size, keep
        self.infos: dict[Path, VideoInfo | Exception] = {}
        self.cache: dict[tuple, tuple[np.ndarray, float]] = {}

    def get(self, doc: Document) -> tuple[np.ndarray, float]:
        """``(frames [K, H, W, 3], sampled fps)``; raises :class:`DataError` for an unreadable video."""
        key = (doc.video, doc.span)
        if key in self.cache:
            return self.cache[key]
        info = self.infos.get(doc.video)
        if info is None:
            try:
                info = probe_video(doc.video)
            except DataError as err:
                info = err
            self.infos[doc.video] = info
        if isinstance(info, Exception):
            raise info
        indices = frame_indices(self.task.sampling, self.task.num_frames, info, doc.span)
        frames = read_document_frames(doc.video, indices, size=self.size)
        start, end = doc.span if doc.span is not None else (0.0, info.num_frames / info.fps)
        fps = self.task.num_frames / max(end - start, 1e-3)
        if len(self.cache) >= self.keep:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = (frames, fps)
        return frames, fps


def run_task(task: TransferTask, method: TransferMethod, *, data: TaskData | None = None, batch_size: int = 8,
             compare_unadapted: bool = False, frame_size: int | None = None, repetition_penalty: float | None = None,
             limit: int | None = None, progress: Callable[[int, int], None] | None = None) -> TransferOutcome:
    """Answer every document (the first ``limit``), parse, aggregate per variant (see the module docstring)."""
    data = data if data is not None else task.load()
    docs = data.documents[:limit] if limit else list(data.documents)
    variants = {"adapted": method.adapter}
    if compare_unadapted and method.adapter is not None:
        variants["unadapted"] = None
    frames = _Frames(task, frame_size, keep=max(16, 2 * batch_size))
    outputs: dict[str, list[DocResult]] = {v: [] for v in variants}
    seconds = {v: 0.0 for v in variants}
    run_faults: list[Fault] = []
    decode_s = 0.0
    for begin in range(0, len(docs), batch_size):
        batch = docs[begin:begin + batch_size]
        readable, clips, fps = [], [], []
        start = time.perf_counter()
        for doc in batch:
            try:
                clip, rate = frames.get(doc)
            except DataError as err:
                run_faults.append(Fault("video_unreadable", doc.doc_id, f"{err}: scored as unanswered"))
                for variant in variants:
                    result = task.process_result(doc, "")
                    result.variant = variant
                    outputs[variant].append(result)
                continue
            readable.append(doc)
            clips.append(torch.from_numpy(np.ascontiguousarray(clip)))
            fps.append(rate)
        decode_s += time.perf_counter() - start
        if readable:
            messages = [task.doc_to_messages(d) for d in readable]
            for variant, adapter in variants.items():
                start = _now()
                if getattr(task, "answer_mode", "generate") == "letter_logits":
                    texts = choose_letters(method.backbone, messages, clips, fps, letters=LETTERS, adapter=adapter)
                else:
                    texts = generate_answers(method.backbone, messages, clips, fps,
                                             max_new_tokens=task.max_new_tokens, adapter=adapter,
                                             repetition_penalty=repetition_penalty)
                seconds[variant] += _now() - start
                for doc, text in zip(readable, texts, strict=True):
                    result = task.process_result(doc, text)
                    result.variant = variant
                    outputs[variant].append(result)
        if progress is not None:
            progress(min(begin + batch_size, len(docs)), len(docs))
    done = {}
    for variant, results in outputs.items():
        metrics = task.aggregate(results)
        done[variant] = VariantOutcome(results, metrics, seconds[variant], dict(getattr(task, "metric_info", {})))
    return TransferOutcome(task, TaskData(docs, data.faults), done, run_faults, decode_s)


def _now() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
