"""Prompts and answer parsing for binary video anomaly detection with a VLM.

The wording follows COPRA / VLM-R1: the model is asked for a binary label (0 normal, 1 abnormal) with a
one-sentence reason, strictly formatted as ``<think>one sentence</think><answer>0 or 1</answer>``.

Scoring (continuous anomaly score) teacher-forces the assistant turn up to :data:`ANSWER_PREFIX` and compares
the next-token probabilities of ``"1"`` and ``"0"``. Generation (GRPO rollouts) lets the model write the whole
completion, which :func:`parse_answer` and :data:`FORMAT_REGEX` then check.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_PREFIX",
    "FORMAT_REGEX",
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "format_reward",
    "parse_answer",
]

SYSTEM_PROMPT: str = (
    "You are a video anomaly detection assistant for surveillance footage. "
    "You watch a short surveillance video clip and decide whether it shows an anomaly, "
    "that is an abnormal event such as a crime, violence, fighting, abuse, assault, robbery, burglary, "
    "stealing, shoplifting, shooting, arson, an explosion, vandalism, an arrest or a road accident. "
    "Answer with a binary label: 0 if the clip is normal, 1 if the clip is abnormal. "
    "First give a one-sentence reason, then the label. "
    "Your response must be strictly formatted as <think>one sentence</think><answer>0 or 1</answer> "
    "with nothing before or after it."
)

USER_PROMPT: str = (
    "Does this surveillance video clip show an anomaly? "
    "Reply with <think>one sentence</think><answer>0 or 1</answer>, where 0 means normal and 1 means abnormal."
)

#: Teacher-forced assistant prefix used for scoring: the continuous score is P("1") vs P("0") right after it.
ANSWER_PREFIX: str = "<answer>"

#: VLM-R1's format check; use with ``re.fullmatch(FORMAT_REGEX, text, re.DOTALL)``.
FORMAT_REGEX: str = r"<think>.*?</think>\s*<answer>.*?</answer>"

_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_FORMAT_RE = re.compile(FORMAT_REGEX, re.DOTALL)


def parse_answer(text: str) -> int | None:
    """Return the binary label inside ``<answer>…</answer>``, or ``None`` when it is absent or malformed.

    The first ``<answer>`` block counts. Surrounding whitespace inside the tags is tolerated
    (``<answer> 1 </answer>`` -> 1); anything other than a single ``0`` or ``1`` (``"yes"``, ``"01"``,
    ``"0 or 1"``, an unclosed tag) gives ``None``.
    """
    if not isinstance(text, str):
        return None
    match = _ANSWER_RE.search(text)
    if match is None:
        return None
    content = match.group(1)
    if content == "0":
        return 0
    if content == "1":
        return 1
    return None


def format_reward(text: str, *, strip: bool = False) -> float:
    """VLM-R1's format reward: 1.0 when the whole completion matches :data:`FORMAT_REGEX`, else 0.0.

    VLM-R1 applies ``re.fullmatch`` to the raw completion (special tokens already removed); ``strip=True``
    ignores leading/trailing whitespace as a more lenient variant.
    """
    if not isinstance(text, str):
        return 0.0
    return 1.0 if _FORMAT_RE.fullmatch(text.strip() if strip else text) else 0.0
