"""Numbers reported in the COPRA paper (arXiv 2605.15325), shown beside ours and always labelled as the paper's.

Frame AUC % on UCF-Crime, AP % on XD-Violence, for post-processing steps 1 / 2 / 3 (docs: copra-method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER = "COPRA paper (arXiv 2605.15325), reported"


@dataclass(frozen=True)
class PaperRow:
    """One reported line. ``metric`` is ``auc`` or ``ap``; ``steps`` holds Step 1 / 2 / 3 in percent."""

    backbone: str
    dataset: str
    method: str
    metric: str
    steps: tuple[float, float, float]
    note: str = ""


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("Qwen2-VL-7B-Instruct", "ucf_crime", "frozen", "auc", (59.36, 77.91, 81.31)),
    PaperRow("Qwen2-VL-7B-Instruct", "ucf_crime", "copra", "auc", (69.73, 84.69, 86.75)),
    PaperRow("Qwen2-VL-7B-Instruct", "ucf_crime", "lora_grpo", "auc", (61.34, 79.51, 83.00),
             "static shared LoRA, same GRPO"),
    PaperRow("Qwen2-VL-7B-Instruct", "xd_violence", "frozen", "ap", (54.01, 62.01, 64.36)),
    PaperRow("Qwen2-VL-7B-Instruct", "xd_violence", "copra", "ap", (63.09, 72.60, 73.96)),
    PaperRow("InternVL2-8B", "ucf_crime", "frozen", "auc", (64.95, 81.74, 84.31)),
    PaperRow("InternVL2-8B", "ucf_crime", "copra", "auc", (71.49, 85.21, 87.14), "with global latent"),
    PaperRow("InternVL2-8B", "ucf_crime", "copra", "auc", (71.79, 84.43, 86.39), "without global latent"),
    PaperRow("InternVL2-8B", "xd_violence", "frozen", "ap", (61.53, 72.83, 74.32)),
    PaperRow("InternVL2-8B", "xd_violence", "copra", "ap", (67.24, 75.80, 76.52)),
    PaperRow("InternVL2-8B", "ucf_crime_to_xd_violence", "frozen", "auc", (71.78, 89.53, 90.63),
             "cross-dataset, tested on XD"),
    PaperRow("InternVL2-8B", "ucf_crime_to_xd_violence", "copra", "auc", (75.90, 90.20, 90.98),
             "cross-dataset, tested on XD"),
    PaperRow("InternVL3-8B", "ucf_crime", "frozen", "auc", (74.77, 84.90, 86.62)),
    PaperRow("InternVL3-8B", "ucf_crime", "copra", "auc", (76.24, 85.84, 87.33)),
)


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def matching_rows(method: str, backbone: str, train_dataset: str, test_set: str) -> list[PaperRow]:
    """Reported rows for our (method, backbone, trained on, tested on), matched loosely on names.

    ``backbone`` is matched as a substring of a checkpoint path (``/models/Qwen2-VL-7B-Instruct``); datasets by
    prefix (``ucf_crime`` matches ``ucf``); cross-dataset rows need the train set to differ from the test set.
    """
    out = []
    for row in PAPER_ROWS:
        if _norm(row.method) != _norm(method) or _norm(row.backbone.split("-Instruct")[0]) not in _norm(backbone):
            continue
        source, _, target = row.dataset.partition("_to_")
        target = target or source
        same = _norm(train_dataset)[:3] == _norm(test_set)[:3]
        if _norm(test_set).startswith(_norm(target)[:3]) and _norm(train_dataset).startswith(_norm(source)[:3]) \
                and (same == (source == target)):
            out.append(row)
    return out
