"""Zero-shot transfer tasks: a VAD-trained method answering multiple-choice video QA and writing dense captions.

One job per module: :mod:`.task` (documents, faults, results, the :class:`~.task.TransferTask` API),
:mod:`.multiple_choice` (options, answer letter, accuracy), :mod:`.caption_metrics` / :mod:`.caption_task` (caption
metrics and their implementations), :mod:`.vru_accident` and :mod:`.hivau` (the readers of the real files),
:mod:`.synthetic` (the embedded default), :mod:`.frames` (which frames), :mod:`.generation` (batched answers under
an adaptation), :mod:`.methods` (loading a method and its adapter), :mod:`.runner` (a run), :mod:`.record` (run folder
and MLflow), :mod:`.command` (``python -m copra_bench transfer``). Users' guide: docs/transfer.md.
"""
