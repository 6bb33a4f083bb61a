"""Captioning metrics from the maintained implementations each benchmark uses, with the implementation recorded.

* ``rouge_l_f1``: Google's ``rouge-score`` (``RougeScorer(["rougeL"], use_stemmer=True)``), F-measure averaged over
  documents: VRU-Accident's ``evaluate_rouge`` (utils/evaluation.py).
* ``bleu_1..4``, ``cider``, ``rouge_l_coco``, ``meteor_java``: ``pycocoevalcap`` after its ``PTBTokenizer``
  (Stanford CoreNLP 3.4.1, Java), corpus-level as the COCO caption evaluation computes them: the HIVAU-70K metrics
  (BLEU / CIDEr / METEOR / ROUGE). METEOR here is the Java METEOR 1.5 shipped in pycocoevalcap.
* ``meteor_nltk``: NLTK's ``meteor_score`` on ``word_tokenize`` tokens without punctuation, averaged: VRU-Accident's
  ``evaluate_meteor``. It needs NLTK's WordNet (and punkt) data, which pip cannot install and nothing here downloads:
  with the data under ``$NLTK_DATA`` it runs, otherwise the number is reported unavailable (never 0) and
  ``meteor_java`` stands in, its implementation said in ``implementations``.
* ``spice`` (pycocoevalcap's SPICE 1.0 needs Stanford CoreNLP 3.6.0 models) and ``comet`` (``wmt22-comet-da``) run
  only when :class:`CaptionMetricSettings` points at local copies; otherwise they are listed as unavailable.

:func:`caption_metrics` returns ``(values, implementations, unavailable)``.
"""

from __future__ import annotations

import os
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from copra_bench.errors import CopraError

__all__ = ["CaptionMetricSettings", "CocoScorer", "MetricUnavailable", "caption_metrics", "coco_metrics", "java_available",
           "nltk_meteor", "rouge_l_f1"]


class MetricUnavailable(CopraError, RuntimeError):
    """A metric's implementation or its data is not installed here (the message says what to install)."""


@dataclass(frozen=True)
class CaptionMetricSettings:
    """Which caption metrics to compute and where the optional data lives.

    Attributes:
        rouge: ``rouge-score`` ROUGE-L F1 (VRU-Accident).
        coco: the pycocoevalcap set with PTB tokenisation (needs ``java``).
        nltk_meteor: NLTK METEOR with WordNet (VRU-Accident's METEOR), when the data is found.
        spice_corenlp_dir: a folder holding ``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar``
            (pycocoevalcap's SPICE ``lib/``); None: SPICE unavailable.
        comet_checkpoint: a local ``wmt22-comet-da`` ``checkpoints/model.ckpt`` (needs the ``unbabel-comet``
            package); None: COMET unavailable.
    """

    rouge: bool = True
    coco: bool = True
    nltk_meteor: bool = True
    spice_corenlp_dir: str | None = None
    comet_checkpoint: str | None = None


def java_available() -> bool:
    return shutil.which("java") is not None


def rouge_l_f1(references: list[str], predictions: list[str]) -> float:
    """Mean ROUGE-L F-measure (``rouge-score``, Porter stemmer), references paired with predictions by position."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values = [scorer.score(ref, hyp)["rougeL"].fmeasure for ref, hyp in zip(references, predictions, strict=True)]
    return float(sum(values) / len(values))


class CocoScorer:
    """pycocoevalcap's metrics for many groups of one corpus with three Java starts in all, not three per group: the
    PTB tokeniser runs once over every reference and prediction (it tokenises each caption on its own, so one call
    equals one per group), and one METEOR 1.5 process serves every group. :meth:`scores` of a group is what
    pycocoevalcap computes on that group alone (CIDEr's document frequencies are the group's)."""

    def __init__(self, references: list[str], predictions: list[str]) -> None:
        if not java_available():
            raise MetricUnavailable("the pycocoevalcap metrics (PTB tokeniser, METEOR 1.5) need Java: install a JRE "
                                    "(e.g. apt-get install default-jre-headless) so that `java` is on PATH")
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        both = {f"r{i}": [{"caption": r}] for i, r in enumerate(references)}
        both.update({f"p{i}": [{"caption": p}] for i, p in enumerate(predictions)})
        tokens = PTBTokenizer().tokenize(both)
        self.gts = [tokens[f"r{i}"] for i in range(len(references))]
        self.res = [tokens[f"p{i}"] for i in range(len(predictions))]
        self.meteor = Meteor()

    def scores(self, indices: list[int] | None = None) -> dict[str, float]:
        """BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D of the pairs at ``indices`` (all when None)."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        picked = range(len(self.gts)) if indices is None else indices
        gts = {str(i): self.gts[i] for i in picked}
        res = {str(i): self.res[i] for i in picked}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out = {f"bleu_{n + 1}": float(v) for n, v in enumerate(bleu)}
        out["meteor_java"] = float(self.meteor.compute_score(gts, res)[0])
        out["rouge_l_coco"] = float(Rouge().compute_score(gts, res)[0])
        out["cider"] = float(Cider().compute_score(gts, res)[0])
        return out

    def close(self) -> None:
        _close_meteor(self.meteor)


def coco_metrics(references: list[str], predictions: list[str]) -> dict[str, float]:
    """BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D of pycocoevalcap after PTB tokenisation (one reference each)."""
    scorer = CocoScorer(references, predictions)
    try:
        return scorer.scores()
    finally:
        scorer.close()


def _close_meteor(meteor) -> None:
    """pycocoevalcap's Meteor keeps a Java process open until garbage collection; end it now."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        with meteor.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()


def _nltk_data_present() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
            nltk.data.find("tokenizers/punkt_tab.zip")
        except LookupError:
            return False
    return True


def nltk_meteor(references: list[str], predictions: list[str]) -> float:
    """VRU-Accident's ``evaluate_meteor``: NLTK ``meteor_score`` on word tokens without punctuation, averaged."""
    if not _nltk_data_present():
        raise MetricUnavailable("NLTK METEOR needs the WordNet and punkt_tab data (not installable with pip and never "
                                f"downloaded here): copy them under $NLTK_DATA (now {os.environ.get('NLTK_DATA')!r})")
    from nltk.tokenize import word_tokenize
    from nltk.translate.meteor_score import meteor_score

    scores = []
    for ref, hyp in zip(references, predictions, strict=True):
        ref_tokens = [w for w in word_tokenize(ref) if w not in string.punctuation]
        hyp_tokens = [w for w in word_tokenize(hyp) if w not in string.punctuation]
        scores.append(meteor_score([ref_tokens], hyp_tokens))
    return float(sum(scores) / len(scores))


def _spice(references: list[str], predictions: list[str], corenlp_dir: str) -> float:
    import pycocoevalcap.spice.spice as spice_module

    lib = Path(spice_module.__file__).parent / "lib"
    for jar in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        if not (lib / jar).is_file():
            source = Path(corenlp_dir) / jar
            if not source.is_file():
                raise MetricUnavailable(f"SPICE needs {jar} in {corenlp_dir} (spice_corenlp_dir)")
            shutil.copy2(source, lib / jar)
    gts = {str(i): [r] for i, r in enumerate(references)}
    res = {str(i): [p] for i, p in enumerate(predictions)}
    return float(spice_module.Spice().compute_score(gts, res)[0])


def _comet(references: list[str], predictions: list[str], checkpoint: str) -> float:
    import importlib

    try:  # optional, not a dependency of the project: the user installs unbabel-comet to get COMET
        comet = importlib.import_module("comet")
    except ImportError as err:
        raise MetricUnavailable("COMET needs the unbabel-comet package (pip install unbabel-comet)") from err
    model = comet.load_from_checkpoint(checkpoint)
    data = [{"src": "", "mt": p, "ref": r} for r, p in zip(references, predictions, strict=True)]
    output = model.predict(data, batch_size=8, gpus=0)
    return float(sum(output.scores) / len(output.scores))


def caption_metrics(references: list[str], predictions: list[str], settings: CaptionMetricSettings,
                    *, prefix: str = "", coco: CocoScorer | None = None, indices: list[int] | None = None
                    ) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Every configured caption metric of the pairs; ``(values, implementations, unavailable reasons)``.

    ``coco`` (a :class:`CocoScorer` of the whole corpus) and ``indices`` (these pairs' positions in it) share one
    tokeniser pass and METEOR process between the groups of a corpus."""
    values: dict[str, float] = {}
    impl: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    if not references:
        return values, impl, unavailable

    def attempt(name: str, implementation: str, fn) -> None:
        try:
            result = fn()
        except MetricUnavailable as err:
            unavailable[name] = str(err)
            return
        if isinstance(result, dict):
            values.update({f"{prefix}{k}": v for k, v in result.items()})
        else:
            values[f"{prefix}{name}"] = result
        impl[name] = implementation

    if settings.rouge:
        attempt("rouge_l_f1", "rouge-score RougeScorer(['rougeL'], use_stemmer=True), mean F1",
                lambda: rouge_l_f1(references, predictions))
    if settings.coco:
        attempt("coco", "pycocoevalcap 1.2 after PTBTokenizer: Bleu(4), Meteor 1.5 (Java), Rouge, Cider",
                lambda: coco.scores(indices) if coco is not None else coco_metrics(references, predictions))
    if settings.nltk_meteor:
        attempt("meteor_nltk", "nltk.translate.meteor_score with WordNet, word_tokenize minus punctuation, mean",
                lambda: nltk_meteor(references, predictions))
    if settings.spice_corenlp_dir:
        attempt("spice", "pycocoevalcap SPICE 1.0", lambda: _spice(references, predictions,
                                                                    settings.spice_corenlp_dir))
    else:
        unavailable["spice"] = "needs Stanford CoreNLP 3.6.0 jars: set metrics.spice_corenlp_dir to a local copy"
    if settings.comet_checkpoint:
        attempt("comet", "unbabel-comet wmt22-comet-da", lambda: _comet(references, predictions,
                                                                         settings.comet_checkpoint))
    else:
        unavailable["comet"] = "needs the wmt22-comet-da checkpoint: set metrics.comet_checkpoint to a local copy"
    return values, impl, unavailable
