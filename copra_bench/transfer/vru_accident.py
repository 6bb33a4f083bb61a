"""VRU-Accident (Kim et al., 2025): multiple-choice VQA and dense captioning of crashes involving vulnerable road users.

Files as the benchmark's repository (github.com/Kimyounggun99/VRU-Accident) lays them out under ``root``:

* ``MetaData/<subset>/<subset>_VQA_annotation.json``: ``{"./VRU_videos/<subset>/<name>.mp4": {<category>:
  {"question", "options", "GT"}}}``, six categories per video (weather and light, location, road type, accident type,
  accident reason, prevention method), ``options`` one string ``"A. ..., B. ..., C. ..., D. ..."``;
* ``MetaData/<subset>/<subset>_Dense_Caption.json``: ``{"./VRU_videos/<subset>/<name>": {"gt": ...}}`` (keys without
  ``.mp4``);
* the videos at the keys' paths, relative to ``root``.

Protocol (``main.py``, ``utils/utils.py``, ``utils/evaluation.py``): 8 frames (``vru_arange``), greedy, 10 new tokens
for VQA and 200 for captions; the VQA prompt is ``question + " " + options`` and the caption prompt the fixed
five-line instruction below, each as one user turn, text then video. Predictions are paired with their references
by key here (the official caption script pairs two files by dict order, which silently misaligns when one file lacks
a key or is ordered differently).
"""

from __future__ import annotations

import json
from pathlib import Path

from .caption_task import CaptionTask
from .multiple_choice import LETTERS, accuracy_metrics, parse_options, score_choice
from .task import DocResult, Document, Fault, TaskData, TransferError, TransferTask

__all__ = ["CAPTION_PROMPT", "SUBSETS", "VRUAccidentCaption", "VRUAccidentVQA"]

SUBSETS = ("CAP_DATA", "DADA_2000", "DoTA", "MANUAL_DATA")
SOURCE = "github.com/Kimyounggun99/VRU-Accident main.py, utils/utils.py, utils/evaluation.py"

#: ``build_conversation_template`` of utils/utils.py for ``--task Dense_Captioning``, verbatim (indentation too).
CAPTION_PROMPT = '''
        Provide a detailed description of this crash video. \n
        Use clear and complete sentences with appropriate traffic and crash-related terminology. \n
        Include descriptions of weather conditions, road type, and vehicle or pedestrian appearance (such as clothing and posture). \n
        Mention vehicle speed, trajectory, and movements, as well as any changes in the pedestrian's behavior. \n
        Focus on the dynamics of the collision, including vehicle approach, pedestrian movement, and final impact. \n
        '''


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise TransferError(f"{path} does not exist: is the root the VRU-Accident folder holding MetaData/<subset>/? "
                            "(or drop the subset from subsets)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TransferError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise TransferError(f"{path}: expected an object keyed by video, got {type(data).__name__}")
    return data


def _video_path(root: Path, key: str, suffix: str = "") -> Path:
    """The video a key names, relative to ``root`` (keys start with ``./``)."""
    return root / ((key[2:] if key.startswith("./") else key.lstrip("/")) + suffix)


class _VRUAccident:
    def __init__(self, *, root: str, subsets: list[str] | tuple[str, ...] = SUBSETS, num_frames: int = 8,
                 max_new_tokens: int | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise TransferError(f"VRU-Accident root {self.root} does not exist: pass --root <folder> (or set "
                                "task.init_args.root)")
        self.subsets = list(subsets)
        if not self.subsets:
            raise TransferError("task.init_args.subsets is empty")
        self.num_frames = int(num_frames)
        if max_new_tokens is not None:
            self.max_new_tokens = int(max_new_tokens)


class VRUAccidentVQA(_VRUAccident, TransferTask):
    """VRU-Accident multiple-choice VQA: accuracy per category (pooled over subsets), their mean, per subset.

    Args:
        root: the folder holding ``MetaData/`` and the videos at the annotation keys.
        subsets: which subsets (default all four of the paper: CAP_DATA, DADA_2000, DoTA, MANUAL_DATA).
        num_frames: frames per video (official: 8).
        max_new_tokens: official: 10.
        answer_from_last_line: read the letter from the output's last line, as the official Qwen post-processor.
        answer_mode: ``generate`` (official: greedy text, then the letter parsed from it) or ``letter_logits``
            (the letter with the highest next-token logit after the prompt, lmms-eval's likelihood scoring; not the
            benchmark's protocol, recorded as ``transfer.answer_mode``).
    """

    name = "vru_accident_vqa"
    kind = "multiple_choice"
    max_new_tokens = 10
    sampling = "vru_arange"
    protocol_source = SOURCE
    group_keys = ("category", "subset")

    def __init__(self, *, answer_from_last_line: bool = True, answer_mode: str = "generate", **kwargs) -> None:
        super().__init__(**kwargs)
        if answer_mode not in ("generate", "letter_logits"):
            raise TransferError(f"task.init_args.answer_mode must be generate or letter_logits, got {answer_mode!r}")
        self.answer_from_last_line = bool(answer_from_last_line)
        self.answer_mode = answer_mode

    def protocol(self) -> dict:
        return {**super().protocol(), "answer_mode": self.answer_mode,
                "answer_parsing": "first \\b[A-D]\\b of the " + ("last line" if self.answer_from_last_line
                                                                    else "whole output")}

    def load(self) -> TaskData:
        docs: list[Document] = []
        faults: list[Fault] = []
        for subset in self.subsets:
            path = self.root / "MetaData" / subset / f"{subset}_VQA_annotation.json"
            for key, categories in _read_json(path).items():
                video = _video_path(self.root, key)
                where = f"{path.name}: {key}"
                if not video.is_file():
                    faults.append(Fault("video_missing", where, f"no video at {video}: its questions are skipped"))
                    continue
                if not isinstance(categories, dict):
                    faults.append(Fault("record_malformed", where, "expected {category: {question, options, GT}}"))
                    continue
                for category, item in categories.items():
                    doc = self._document(subset, key, video, category, item, f"{where} / {category}", faults)
                    if doc is not None:
                        docs.append(doc)
        return TaskData(docs, faults)

    def _document(self, subset: str, key: str, video: Path, category: str, item, where: str,
                  faults: list[Fault]) -> Document | None:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("question", "options", "GT")):
            faults.append(Fault("record_malformed", where, "needs string question, options and GT: skipped"))
            return None
        choices = parse_options(item["options"])
        if choices is None:
            faults.append(Fault("options_unparsed", where, f"options {item['options'][:80]!r} are not 'A. .., B. .., "
                                                           "C. .., D. ..': asked as written (the prompt is the raw "
                                                           "string), scored on the letter"))
        target = item["GT"].strip().upper()
        if target not in LETTERS:
            faults.append(Fault("target_invalid", where, f"GT {item['GT']!r} is not one of A-D: always wrong"))
        return Document(doc_id=f"{subset}/{key}::{category}", video=video, prompt=item["question"] + " " +
                        item["options"], target=target, groups={"subset": subset, "category": category},
                        choices=choices, key=key)

    def process_result(self, doc: Document, output: str) -> DocResult:
        return score_choice(doc, output, last_line=self.answer_from_last_line)

    def aggregate(self, results: list[DocResult]) -> dict[str, float]:
        return accuracy_metrics(results, macro_key="category", group_keys=self.group_keys)

    def official_predictions(self, results: list[DocResult]) -> dict[str, dict]:
        """``<subset>_VQA_response.json`` contents in the official format (``{video: {category: {pred, GT}}}``),
        which the benchmark's own ``VQA_eval`` reads."""
        files: dict[str, dict] = {}
        for r in results:
            video = files.setdefault(f"{r.groups['subset']}_VQA_response.json", {}).setdefault(r.key, {})
            video[r.groups["category"]] = {"pred": r.parsed, "GT": r.target}
        return files


class VRUAccidentCaption(_VRUAccident, CaptionTask):
    """VRU-Accident dense captioning: ROUGE-L F1 (rouge-score), METEOR, SPICE / COMET when available; pooled over
    the subsets as the official script, and per subset.

    Args:
        root, subsets, num_frames: as :class:`VRUAccidentVQA`.
        max_new_tokens: official: 200.
        metrics: :class:`~copra_bench.transfer.caption_metrics.CaptionMetricSettings` fields.
    """

    name = "vru_accident_caption"
    max_new_tokens = 200
    sampling = "vru_arange"
    protocol_source = SOURCE
    group_keys = ("subset",)
    #: VRU-Accident's METEOR is NLTK's (WordNet); the Java METEOR 1.5 stands in when the data is missing
    primary_meteor = "meteor_nltk"

    def __init__(self, *, metrics: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_metric_settings(metrics)

    def load(self) -> TaskData:
        docs: list[Document] = []
        faults: list[Fault] = []
        for subset in self.subsets:
            path = self.root / "MetaData" / subset / f"{subset}_Dense_Caption.json"
            for key, item in _read_json(path).items():
                where = f"{path.name}: {key}"
                video = _video_path(self.root, key, "" if key.endswith(".mp4") else ".mp4")
                if not isinstance(item, dict) or not isinstance(item.get("gt"), str) or not item["gt"].strip():
                    faults.append(Fault("record_malformed", where, "needs a non-empty string 'gt': skipped"))
                    continue
                if not video.is_file():
                    faults.append(Fault("caption_video_missing", where, f"no video at {video}: skipped (not "
                                                                        "paired with another caption)"))
                    continue
                docs.append(Document(doc_id=f"{subset}/{key}", video=video, prompt=CAPTION_PROMPT,
                                     target=item["gt"], groups={"subset": subset}, key=key))
        return TaskData(docs, faults)

    def official_predictions(self, results: list[DocResult]) -> dict[str, dict]:
        """``<subset>_Dense_Captioning_response.json`` contents (``{key: {"pred": ...}}``) in reference order."""
        files: dict[str, dict] = {}
        for r in results:
            files.setdefault(f"{r.groups['subset']}_Dense_Captioning_response.json", {})[r.key] = {"pred": r.parsed}
        return files
