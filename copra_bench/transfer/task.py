"""The task abstraction of the transfer benchmarks: documents, prompts, parsing, per-document results, aggregation.

Modelled on lmms-eval's task API (``doc_to_visual`` / ``doc_to_text`` / ``doc_to_target`` / ``process_results`` /
``aggregation``) and VLMEvalKit's ``build_prompt`` / ``evaluate``: a benchmark is one :class:`TransferTask`
subclass (its reader, its prompt, its parser and its metrics) plus one YAML under ``configs/transfer/``.

* :meth:`TransferTask.load` reads the benchmark's own files into :class:`Document` s and the :class:`Fault` s met on
  the way (a question whose options do not parse, a caption key with no video, a span beyond the video). Faults are
  counted and listed, never raised; a faulty document is either dropped (it cannot be asked) or kept and scored as
  the official script would score it.
* :meth:`TransferTask.doc_to_messages` is the chat turn (the benchmark's own prompt and content order).
* :meth:`TransferTask.process_result` turns one model output into a :class:`DocResult` (a parse failure is a
  result: wrong, as in the official scripts, and a fault).
* :meth:`TransferTask.aggregate` computes the corpus-level metrics overall and per group key.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from copra_bench.errors import DataError

__all__ = ["DocResult", "Document", "Fault", "TaskData", "TransferError", "TransferTask"]


class TransferError(DataError):
    """A transfer benchmark cannot be read or run: missing root or files, unknown subset, bad config."""


@dataclass(frozen=True)
class Document:
    """One question or captioning request about one video (or a time span of it).

    Attributes:
        doc_id: unique within the task (the benchmark's own key, e.g. ``<video key>::<category>``).
        video: the video file.
        span: ``(start_s, end_s)`` seconds inside ``video`` (HIVAU clips and events), or None for the whole video.
        prompt: the user text of the benchmark's prompt.
        target: the reference (the ground-truth letter, or the reference caption).
        groups: group keys the metrics are also reported by (``subset``, ``category``, ``level``, ``task``).
        choices: multiple choice: letter -> option text, as parsed from the benchmark's options string.
        key: the key the benchmark's files pair predictions and references by (written in the predictions JSON).
    """

    doc_id: str
    video: Path
    prompt: str
    target: str
    groups: dict[str, str] = field(default_factory=dict)
    span: tuple[float, float] | None = None
    choices: dict[str, str] | None = None
    key: str = ""


@dataclass(frozen=True)
class Fault:
    """Something wrong in the input or the output, counted and listed (never a crash).

    ``kind`` is one of the task's fault kinds (``options_unparsed``, ``video_missing``, ``span_beyond_video``,
    ``no_answer_letter`` ...), ``where`` the file and key, ``detail`` what was seen and what happens to it.
    """

    kind: str
    where: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class TaskData:
    """What :meth:`TransferTask.load` returns: the documents that can be asked and the faults met reading."""

    documents: list[Document]
    faults: list[Fault] = field(default_factory=list)

    def fault_counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.faults))


@dataclass
class DocResult:
    """One document's outcome: the raw output, what was parsed from it and its per-document score (if any)."""

    doc_id: str
    output: str
    parsed: str | None
    target: str
    groups: dict[str, str]
    score: float | None = None  # multiple choice: 1.0 correct, 0.0 wrong (a parse failure is 0.0)
    key: str = ""
    variant: str = "adapted"
    faults: list[Fault] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "faults"}
        out["faults"] = [f.kind for f in self.faults]
        return out


class TransferTask(abc.ABC):
    """One transfer benchmark (see the module docstring).

    Class attributes say the protocol the benchmark's repository follows, recorded with every run:
    ``num_frames`` (frames the VLM sees per document), ``max_new_tokens`` (greedy decoding budget), ``sampling``
    (how the frames are picked: ``vru_arange`` or ``segment_centres``), ``protocol_source`` (repository and file).
    """

    #: short name used in metric keys, run names and the report (``vru_accident_vqa``)
    name: str = "task"
    #: ``"multiple_choice"`` or ``"caption"``
    kind: str = "caption"
    num_frames: int = 8
    max_new_tokens: int = 64
    sampling: str = "segment_centres"
    protocol_source: str = ""
    #: the group keys the metrics are reported by, in order (each document has a value for each)
    group_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def load(self) -> TaskData:
        """Read the benchmark's files into documents and faults (never raises for a bad record)."""

    def doc_to_messages(self, doc: Document) -> list[dict[str, Any]]:
        """The chat messages of ``doc`` (one video placeholder; the frames are passed separately). Default: one user
        turn, text then video, as VRU-Accident's Qwen/LLaVA template; tasks override for their own order."""
        return [{"role": "user", "content": [{"type": "text", "text": doc.prompt}, {"type": "video"}]}]

    @abc.abstractmethod
    def process_result(self, doc: Document, output: str) -> DocResult:
        """One output -> its :class:`DocResult` (parse, per-document score, output faults)."""

    @abc.abstractmethod
    def aggregate(self, results: list[DocResult]) -> dict[str, float]:
        """Corpus-level metrics of ``results``: ``overall/<metric>`` and ``<group key>/<value>/<metric>``."""

    def protocol(self) -> dict[str, Any]:
        """What the run records as ``transfer.*`` params: the protocol followed and where it comes from."""
        return {"task": self.name, "kind": self.kind, "num_frames": self.num_frames,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy", "frame_sampling": self.sampling,
                "protocol_source": self.protocol_source}
