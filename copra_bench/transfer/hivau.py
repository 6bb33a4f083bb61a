"""HIVAU-70K (HolmesVAU, Zhang et al., CVPR 2025): anomaly captioning at clip, event and video level.

Files as github.com/pipixin321/HolmesVAU lays them out under ``root`` (``HIVAU-70k/``):

* ``instruction/merge_instruction_test_final.jsonl``: 3,339 rows ``{"id", "type": clip|event|video, "task":
  caption|judgement|description|analysis, "video", "prompt", "anwser"}`` (the answer key is spelled ``anwser``);
  ``video`` is ``ucf-crime/videos/test/<name>.mp4``, ``.../events/test/<name>_E<e>.mp4`` or
  ``.../clips/test/<name>_E<e>C<c>.mp4``;
* ``raw_annotations/{ucf,xd}_database_test.json``: per video ``n_frames``, ``fps``, ``events`` (``[start_s, end_s]``
  each) and ``clips`` (per event, a list of ``[start_s, end_s]``), in seconds of the source video;
* ``videos/<dataset>/videos/test/<name>.mp4``: the source videos. Clips and events are read from them by seeking
  to their span; the pre-cut files ``split_video.py`` would write are not needed.

Protocol (``holmesvau/holmesvau_utils.py:generate``, ``load_model``): 12 frames at the segment centres of the span
(``get_index``; the anomaly-focused sampler is optional there and not used), greedy, ``max_new_tokens=1024``; the
prompt is the row's, after the frames. Metrics: BLEU-1..4, CIDEr, METEOR, ROUGE-L via pycocoevalcap (PTB tokens;
Java METEOR 1.5) per level (clip, event, video) and per task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .caption_task import CaptionTask
from .task import DocResult, Document, Fault, TaskData, TransferError

__all__ = ["LEVELS", "HIVAUCaption"]

LEVELS = ("clip", "event", "video")
_SEGMENT = re.compile(r"^(?P<name>.+?)_E(?P<event>\d+)(?:C(?P<clip>\d+))?$")
_DATABASES = {"ucf-crime": "ucf_database_test.json", "xd-violence": "xd_database_test.json"}
SOURCE = "github.com/pipixin321/HolmesVAU holmesvau/holmesvau_utils.py, HIVAU-70k/split_video.py"


class HIVAUCaption(CaptionTask):
    """HIVAU-70K test instructions, every level and task (or those chosen).

    Args:
        root: the ``HIVAU-70k`` folder (``instruction/``, ``raw_annotations/``, ``videos/``).
        levels: any of clip, event, video.
        tasks: any of caption, judgement, description, analysis (None: all).
        num_frames: official 12.
        max_new_tokens: official 1024.
        metrics: :class:`~copra_bench.transfer.caption_metrics.CaptionMetricSettings` fields.
    """

    name = "hivau_caption"
    num_frames = 12
    max_new_tokens = 1024
    sampling = "segment_centres"
    protocol_source = SOURCE
    group_keys = ("level", "task", "dataset")

    def __init__(self, *, root: str, levels: list[str] | tuple[str, ...] = LEVELS, tasks: list[str] | None = None,
                 num_frames: int = 12, max_new_tokens: int | None = None, metrics: dict | None = None) -> None:
        self.root = Path(root).expanduser()
        if not (self.root / "instruction").is_dir():
            raise TransferError(f"HIVAU-70K root {self.root} has no instruction/ folder: pass --root (or set "
                                "task.init_args.root) with the HIVAU-70k folder of the HolmesVAU repository")
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown:
            raise TransferError(f"task.init_args.levels: unknown {unknown}; choose from {', '.join(LEVELS)}")
        self.levels, self.tasks = list(levels), None if tasks is None else list(tasks)
        self.num_frames = int(num_frames)
        if max_new_tokens is not None:
            self.max_new_tokens = int(max_new_tokens)
        # HIVAU's METEOR is pycocoevalcap's Java 1.5: NLTK's is off unless asked for
        self.set_metric_settings({"nltk_meteor": False, **dict(metrics or {})})
        self._databases: dict[str, dict] = {}

    def _database(self, dataset: str) -> dict | None:
        if dataset not in self._databases:
            name = _DATABASES.get(dataset)
            path = self.root / "raw_annotations" / name if name else None
            if path is None or not path.is_file():
                self._databases[dataset] = None  # type: ignore[assignment]
            else:
                try:
                    self._databases[dataset] = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as err:
                    raise TransferError(f"{path} is not valid JSON: {err}") from None
        return self._databases[dataset]

    def load(self) -> TaskData:
        path = self.root / "instruction" / "merge_instruction_test_final.jsonl"
        if not path.is_file():
            raise TransferError(f"{path} does not exist (HolmesVAU's HIVAU-70k/instruction/)")
        docs: list[Document] = []
        faults: list[Fault] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                faults.append(Fault("record_malformed", where, f"not JSON ({err}): skipped"))
                continue
            doc = self._document(row, where, faults)
            if doc is not None:
                docs.append(doc)
        return TaskData(docs, faults)

    def _document(self, row: Any, where: str, faults: list[Fault]) -> Document | None:
        answer = row.get("anwser", row.get("answer")) if isinstance(row, dict) else None
        if not isinstance(answer, str) or not all(isinstance(row.get(k), str) for k in ("type", "video", "prompt")):
            faults.append(Fault("record_malformed", where, "needs type, video, prompt and anwser strings: skipped"))
            return None
        level, task = row["type"], str(row.get("task", ""))
        if level not in self.levels or (self.tasks is not None and task not in self.tasks):
            return None
        parts = row["video"].split("/")
        if len(parts) < 2:
            faults.append(Fault("record_malformed", where, f"video {row['video']!r} is not <dataset>/...: skipped"))
            return None
        dataset, stem = parts[0], Path(parts[-1]).stem
        name, span = stem, None
        if level in ("clip", "event"):
            resolved = self._span(dataset, stem, level, where, faults)
            if resolved is None:
                return None
            name, span = resolved
        source = self.root / "videos" / dataset / "videos" / "test" / f"{name}.mp4"
        if not source.is_file():
            faults.append(Fault("video_missing", where, f"no source video {source}: skipped"))
            return None
        return Document(doc_id=f"{row.get('id', where)}", video=source, prompt=row["prompt"], target=answer,
                        groups={"level": level, "task": task, "dataset": dataset}, span=span, key=row["video"])

    def _span(self, dataset: str, stem: str, level: str, where: str,
              faults: list[Fault]) -> tuple[str, tuple[float, float]] | None:
        match = _SEGMENT.match(stem)
        database = self._database(dataset)
        if match is None or database is None or match.group("name") not in database:
            faults.append(Fault("span_unknown", where, f"{stem}: no {level} span in raw_annotations for "
                                                       f"{dataset}: skipped"))
            return None
        entry, event = database[match.group("name")], int(match.group("event"))
        try:
            span = entry["events"][event] if level == "event" else entry["clips"][event][int(match.group("clip"))]
            start, end = float(span[0]), float(span[1])
        except (KeyError, IndexError, TypeError, ValueError):
            faults.append(Fault("span_unknown", where, f"{stem}: the {level} index is not in raw_annotations"))
            return None
        duration = float(entry.get("n_frames", 0)) / float(entry.get("fps") or 1.0)
        if duration and start >= duration:
            faults.append(Fault("span_beyond_video", where, f"{stem}: span [{start}, {end}] s starts after the video "
                                                            f"ends ({duration:.2f} s): skipped"))
            return None
        if duration and end > duration + 1e-6:
            faults.append(Fault("span_beyond_video", where, f"{stem}: span [{start}, {end}] s ends after the video "
                                                            f"({duration:.2f} s): read up to its last frame"))
            end = duration
        if end <= start:
            faults.append(Fault("span_unknown", where, f"{stem}: empty span [{start}, {end}]: skipped"))
            return None
        return match.group("name"), (start, end)

    def doc_to_messages(self, doc: Document) -> list[dict[str, Any]]:
        # HolmesVAU's chat puts the frames before the question ("Frame1: <image>\n..." + prompt)
        return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": doc.prompt}]}]

    def official_predictions(self, results: list[DocResult]) -> dict[str, Any]:
        """One JSONL-like list with the instruction rows' ids, videos and predictions."""
        return {"hivau_predictions.json": [{"id": r.doc_id, "video": r.key, "type": r.groups["level"],
                                            "task": r.groups["task"], "pred": r.parsed, "anwser": r.target}
                                           for r in results]}
