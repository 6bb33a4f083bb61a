"""Multiple-choice video QA: the options string, the answer letter, accuracy per group.

Conventions of VRU-Accident's official code (``utils/utils.py`` and ``utils/evaluation.py`` of
github.com/Kimyounggun99/VRU-Accident, mirrored as VRUAccidentAnonymous/VRU-Accident):

* the prompt is ``question + " " + options`` (the options string as the annotation holds it);
* the answer is the first ``\\b[A-D]\\b`` of the output's last line (``extract_single_choice(output.split('\\n')[-1])``
  for the Qwen models), else ``Answer: (X)``; no letter means no answer, which counts as wrong;
* accuracy is computed per category over all subsets pooled (``VQA_eval`` reads every subset's response file into
  one ``category_total``); the headline number is the mean over the six categories.
"""

from __future__ import annotations

import re
from collections import defaultdict

from .task import DocResult, Document, Fault

__all__ = ["LETTERS", "accuracy_metrics", "extract_choice", "metric_name", "parse_options", "score_choice"]

LETTERS = ("A", "B", "C", "D")
_FIRST_LETTER = re.compile(r"\b[A-D]\b")
_ANSWER_LETTER = re.compile(r"Answer:\s*\(?([A-D])\)?")


def parse_options(options: str, letters: tuple[str, ...] = LETTERS) -> dict[str, str] | None:
    """``"A. x, B. y, C. z, D. w"`` -> ``{"A": "x", ...}``; None when the letters are not all there in order.

    Options may hold commas and full stops (``"B. ... the street., C. ..."``): an option ends only where
    ``", <next letter>. "`` starts, looked for after the previous option's start.
    """
    if not isinstance(options, str):
        return None
    text = options.strip()
    first = re.match(rf"{letters[0]}\.\s*", text)
    if first is None:
        return None
    starts = [(letters[0], first.start(), first.end())]
    for letter in letters[1:]:
        found = re.compile(rf",\s*{letter}\.\s*").search(text, starts[-1][2])
        if found is None:
            return None
        starts.append((letter, found.start(), found.end()))
    parsed = {}
    for i, (letter, _begin, end) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        parsed[letter] = text[end:stop].strip()
    return parsed if all(parsed.values()) else None


def extract_choice(output: str, *, last_line: bool = True) -> str | None:
    """The answer letter of a model output (the official ``extract_single_choice``), or None."""
    if not isinstance(output, str):
        return None
    text = output.split("\n")[-1] if last_line else output
    found = _FIRST_LETTER.findall(text)
    if found:
        return found[0]
    match = _ANSWER_LETTER.search(text)
    return match.group(1) if match else None


def score_choice(doc: Document, output: str, *, last_line: bool = True) -> DocResult:
    """Parse one output against ``doc.target``: 1.0 when the letters match, else 0.0 (no letter: 0.0 + a fault)."""
    letter = extract_choice(output, last_line=last_line)
    faults = []
    if letter is None:
        faults.append(Fault("no_answer_letter", doc.doc_id,
                            f"no A-D letter in the output {output[:80]!r}: counted as wrong (official scripts)"))
    correct = letter is not None and letter == doc.target.strip().upper()
    return DocResult(doc.doc_id, output, letter, doc.target, dict(doc.groups), 1.0 if correct else 0.0, doc.key,
                     faults=faults)


def metric_name(value: str) -> str:
    """A group value as a metric-key segment: ``"weather and light"`` -> ``weather_and_light``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("_") or "_"


def accuracy_metrics(results: list[DocResult], *, macro_key: str | None = "category",
                     group_keys: tuple[str, ...] = ()) -> dict[str, float]:
    """Accuracy (%) overall and per group value.

    ``overall/accuracy`` is the mean over the values of ``macro_key`` of their pooled accuracy (VRU-Accident: the
    six categories over all subsets); ``overall/accuracy_micro`` pools every question. Every group key gets
    ``<key>/<value>/accuracy`` and ``<key>/<value>/n``; ``overall/no_answer`` counts the outputs with no letter.
    """
    out: dict[str, float] = {}
    if not results:
        return out
    scores = [float(r.score or 0.0) for r in results]
    out["overall/n"] = float(len(results))
    out["overall/accuracy_micro"] = 100.0 * sum(scores) / len(scores)
    out["overall/no_answer"] = float(sum(1 for r in results if r.parsed is None))
    for key in group_keys:
        by_value: dict[str, list[float]] = defaultdict(list)
        for r, s in zip(results, scores, strict=True):
            by_value[r.groups.get(key, "")].append(s)
        for value, values in sorted(by_value.items()):
            out[f"{key}/{metric_name(value)}/accuracy"] = 100.0 * sum(values) / len(values)
            out[f"{key}/{metric_name(value)}/n"] = float(len(values))
        if key == macro_key:
            per_value = [sum(v) / len(v) for v in by_value.values()]
            out["overall/accuracy"] = 100.0 * sum(per_value) / len(per_value)
    out.setdefault("overall/accuracy", out["overall/accuracy_micro"])
    return out
