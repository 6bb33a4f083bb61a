"""Caption metrics against the maintained packages (and by hand where a value is easy to derive), and metrics that
cannot run reported as unavailable, never as 0. The Java metrics run once (a module fixture): they are slow-ish."""

from __future__ import annotations

import pytest

from copra_bench.transfer.caption_metrics import (
    CaptionMetricSettings,
    MetricUnavailable,
    caption_metrics,
    coco_metrics,
    java_available,
    nltk_meteor,
    rouge_l_f1,
)

REFS = ["A man hits a dog with a stick.", "Two cars crash at night on a wet road.", "The store is empty."]
HYPS = ["a man beats the dog with a stick", "cars collide at night", "A person sprays paint on the wall."]


def test_rouge_l_f1_is_rouge_score_with_the_stemmer_averaged():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(REFS, HYPS, strict=True)) / 3
    assert rouge_l_f1(REFS, HYPS) == pytest.approx(expected, abs=1e-12)
    # by hand: LCS("the cat sat", "the cat") = 2 tokens: P = 1, R = 2/3, F = 0.8
    assert rouge_l_f1(["the cat sat"], ["the cat"]) == pytest.approx(0.8, abs=1e-12)
    # the stemmer: "walking" and "walked" both stem to "walk"
    assert rouge_l_f1(["he walked"], ["he walking"]) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def coco():
    if not java_available():
        pytest.skip("no java on PATH (the pycocoevalcap metrics need a JRE; .ci/run checks for it)")
    return coco_metrics(REFS, HYPS)


@pytest.mark.slow  # three Java processes (PTB tokeniser twice, METEOR 1.5): ~15 s on a loaded 2-core machine
def test_coco_metrics_match_pycocoevalcap_after_ptb_tokenisation(coco):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({str(i): [{"caption": r}] for i, r in enumerate(REFS)})
    res = tok.tokenize({str(i): [{"caption": h}] for i, h in enumerate(HYPS)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert coco[f"bleu_{n + 1}"] == pytest.approx(bleu[n], abs=1e-9)
    assert coco["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)
    assert coco["rouge_l_coco"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-9)
    assert 0.0 < coco["meteor_java"] < 1.0
    # BLEU-1 by hand: PTB lower-cases and drops the full stops; hypothesis unigrams clipped by the references:
    # "a man beats the dog with a stick" 6/8 ("beats", "the" unmatched), "cars collide at night" 3/4 ("collide"),
    # "a person sprays paint on the wall" 1/7 ("the"); 10/19 matched; brevity penalty exp(1 - 21/19) (references
    # 8 + 9 + 4 = 21 tokens, hypotheses 19)
    import math

    assert coco["bleu_1"] == pytest.approx(10 / 19 * math.exp(1 - 21 / 19), abs=1e-6)


def test_every_metric_reports_its_implementation_and_the_unavailable_ones_why():
    values, impl, unavailable = caption_metrics(REFS, HYPS, CaptionMetricSettings(coco=False), prefix="overall/")
    assert set(impl) >= {"rouge_l_f1"} and "rouge-score" in impl["rouge_l_f1"]
    assert "spice" in unavailable and "comet" in unavailable
    assert "overall/spice" not in values and "overall/comet" not in values
    try:
        nltk_meteor(REFS, HYPS)
    except MetricUnavailable as err:  # WordNet is not installable with pip and never downloaded
        assert "WordNet" in str(err) and "meteor_nltk" in unavailable
        assert "overall/meteor_nltk" not in values
    else:
        assert "overall/meteor_nltk" in values
    with pytest.raises(MetricUnavailable, match="spice_corenlp_dir"):
        from copra_bench.transfer.caption_metrics import _spice

        _spice(REFS, HYPS, "/nonexistent")


@pytest.mark.slow  # Java: a shared tokeniser pass and METEOR process against a fresh run on the group alone
def test_a_group_scored_from_the_shared_corpus_pass_equals_scoring_it_alone(coco):
    from copra_bench.transfer.caption_metrics import CocoScorer

    scorer = CocoScorer(REFS, HYPS)
    try:
        assert scorer.scores() == pytest.approx(coco, abs=1e-12)
        alone = coco_metrics([REFS[0], REFS[2]], [HYPS[0], HYPS[2]])
        assert scorer.scores([0, 2]) == pytest.approx(alone, abs=1e-9)
    finally:
        scorer.close()
