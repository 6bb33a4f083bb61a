"""The transfer readers on real-format samples (tests/fixtures/transfer), option and answer parsing, frame sampling,
per-group accuracy: every bad record counted and listed, never a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from copra_bench.datamodules.synthetic.writers import write_mp4
from copra_bench.datamodules.video_io import VideoInfo

from copra_bench.transfer.frames import frame_indices
from copra_bench.transfer.hivau import HIVAUCaption
from copra_bench.transfer.multiple_choice import (
    accuracy_metrics,
    extract_choice,
    parse_options,
    score_choice,
)
from copra_bench.transfer.task import DocResult, Document, TransferError
from copra_bench.transfer.vru_accident import (
    CAPTION_PROMPT,
    VRUAccidentCaption,
    VRUAccidentVQA,
)

FIXTURES = Path(__file__).parent / "fixtures" / "transfer"


def _video(path: Path, frames: int = 64, fps: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_mp4(path, [rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)], fps=fps)


@pytest.fixture(scope="module")
def vru_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vru")
    shutil.copytree(FIXTURES / "vru", root, dirs_exist_ok=True)
    for name in ("VRU_1", "VRU_2"):  # VRU_9 stays without a video
        _video(root / "VRU_videos" / "DoTA" / f"{name}.mp4")
    return root


@pytest.fixture(scope="module")
def hivau_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hivau")
    shutil.copytree(FIXTURES / "hivau", root, dirs_exist_ok=True)
    _video(root / "videos" / "ucf-crime" / "videos" / "test" / "Abuse028_x264.mp4")  # 64 frames at 16 fps: 4 s
    return root


def test_options_with_commas_and_full_stops_inside_parse_and_broken_ones_do_not():
    text = ("A. Driver was speeding, and braked late, B. Cyclist does not notice the coming vehicles when crossing "
            "the street., C. A truck ran a red light., D. Pedestrian does not notice")
    assert parse_options(text) == {"A": "Driver was speeding, and braked late",
                                   "B": "Cyclist does not notice the coming vehicles when crossing the street.",
                                   "C": "A truck ran a red light.", "D": "Pedestrian does not notice"}
    assert parse_options("A. urban, B. rural, D. industrial") is None  # no C
    assert parse_options("B. x, A. y, C. z, D. w") is None  # not in order
    assert parse_options("A. x, B. , C. z, D. w") is None  # an empty option
    assert parse_options(None) is None


def test_answer_letter_follows_the_official_post_processor():
    assert extract_choice("B") == "B"
    assert extract_choice("The answer is C.") == "C"
    assert extract_choice("I think\nD. rural") == "D"
    assert extract_choice("A\n") is None  # the last line is empty, as in the official split('\n')[-1]
    assert extract_choice("A\n", last_line=False) == "A"
    assert extract_choice("Answer: (B)") == "B"
    assert extract_choice("nothing here") is None and extract_choice("ABC") is None


def test_accuracy_is_the_mean_over_categories_of_their_pooled_accuracy_and_no_letter_is_wrong():
    def doc(i, category, subset, target):
        return Document(f"d{i}", Path("v.mp4"), "q", target, {"category": category, "subset": subset})

    docs = [doc(0, "loc", "S1", "A"), doc(1, "loc", "S2", "B"), doc(2, "loc", "S2", "C"), doc(3, "time", "S1", "D")]
    results = [score_choice(d, out) for d, out in zip(docs, ["A", "B", "no letter", "D"], strict=True)]
    assert [r.score for r in results] == [1.0, 1.0, 0.0, 1.0]
    assert [f.kind for f in results[2].faults] == ["no_answer_letter"]
    metrics = accuracy_metrics(results, macro_key="category", group_keys=("category", "subset"))
    assert metrics["category/loc/accuracy"] == pytest.approx(200 / 3)
    assert metrics["overall/accuracy"] == pytest.approx((200 / 3 + 100) / 2)  # macro over categories
    assert metrics["overall/accuracy_micro"] == pytest.approx(75.0)
    assert metrics["subset/S2/accuracy"] == pytest.approx(50.0) and metrics["overall/no_answer"] == 1.0


def test_vru_vqa_reader_counts_and_lists_every_bad_record(vru_root):
    task = VRUAccidentVQA(root=str(vru_root), subsets=["DoTA"])
    data = task.load()
    assert len(data.documents) == 12  # 2 videos x 6 categories; VRU_9 has no video
    assert data.fault_counts() == {"video_missing": 1, "options_unparsed": 1, "target_invalid": 1}
    first = data.documents[0]
    assert first.prompt == ("What's the weather and lighting? Choose the correct option (A, B, C, or D) without any "
                            "explanations. A. cloudy day, B. sunny day, C. stormy night, D. rainy afternoon")
    assert first.groups == {"subset": "DoTA", "category": "weather and light"} and first.target == "B"
    unparsed = next(d for d in data.documents if d.doc_id.endswith("VRU_2.mp4::location"))
    assert unparsed.choices is None  # still asked, as the official script asks it
    invalid = next(d for d in data.documents if d.doc_id.endswith("VRU_2.mp4::road type"))
    assert task.process_result(invalid, "E").score == 0.0  # a GT outside A-D can never be matched
    official = task.official_predictions([task.process_result(d, "B") for d in data.documents])
    assert official["DoTA_VQA_response.json"]["./VRU_videos/DoTA/VRU_1.mp4"]["weather and light"] == \
        {"pred": "B", "GT": "B"}


def test_vru_reader_errors_name_the_file(vru_root, tmp_path):
    with pytest.raises(TransferError, match="DADA_2000_VQA_annotation.json does not exist"):
        VRUAccidentVQA(root=str(vru_root), subsets=["DADA_2000"]).load()
    with pytest.raises(TransferError, match="does not exist"):
        VRUAccidentVQA(root=str(tmp_path / "nowhere"))


def test_vru_captions_pair_by_key_not_by_file_order(vru_root):
    task = VRUAccidentCaption(root=str(vru_root), subsets=["DoTA"], metrics={"coco": False, "nltk_meteor": False})
    data = task.load()
    assert [d.key for d in data.documents] == ["./VRU_videos/DoTA/VRU_2", "./VRU_videos/DoTA/VRU_1"]
    assert data.fault_counts() == {"caption_video_missing": 1}
    assert data.documents[0].prompt == CAPTION_PROMPT and data.documents[0].video.name == "VRU_2.mp4"
    # each prediction is its own reference: ROUGE-L 1.0 whatever order the results come in
    results = [task.process_result(d, d.target) for d in reversed(data.documents)]
    metrics = task.aggregate(results)
    assert metrics["overall/rouge_l_f1"] == pytest.approx(1.0)
    assert "spice" in task.metric_info["unavailable"] and "comet" in task.metric_info["unavailable"]
    assert "overall/spice" not in metrics  # unavailable, never 0
    assert list(task.official_predictions(results)["DoTA_Dense_Captioning_response.json"]) == \
        ["./VRU_videos/DoTA/VRU_1", "./VRU_videos/DoTA/VRU_2"]


def test_hivau_reader_takes_spans_from_the_database_and_lists_the_bad_rows(hivau_root):
    task = HIVAUCaption(root=str(hivau_root), metrics={"coco": False, "nltk_meteor": False})
    data = task.load()
    by_id = {d.doc_id: d for d in data.documents}
    assert sorted(by_id) == ["0", "1", "3", "6", "7"]  # id 11 is the broken last line
    assert by_id["6"].span == (1.0, 2.0) and by_id["3"].span == (0.5, 3.0) and by_id["0"].span is None
    assert by_id["7"].span == (2.5, 4.0)  # ended after the 4 s video: read up to its end
    assert by_id["6"].target.startswith("A gray-coated postman")  # the 'anwser' key
    assert by_id["6"].video.name == "Abuse028_x264.mp4"  # the source video, not a pre-cut clip
    assert by_id["6"].groups == {"level": "clip", "task": "caption", "dataset": "ucf-crime"}
    assert data.fault_counts() == {"span_beyond_video": 2, "video_missing": 1, "span_unknown": 1,
                                   "record_malformed": 1}
    only_clips = HIVAUCaption(root=str(hivau_root), levels=["clip"]).load()
    assert sorted(d.doc_id for d in only_clips.documents) == ["6", "7"]
    with pytest.raises(TransferError, match="unknown"):
        HIVAUCaption(root=str(hivau_root), levels=["frame"])


def test_frame_sampling_matches_each_benchmarks_code():
    info = VideoInfo(num_frames=100, fps=25.0, width=32, height=32)
    # VRU-Accident: np.arange(0, total_frames, total_frames / 8).astype(int)
    assert frame_indices("vru_arange", 8, info).tolist() == np.arange(0, 100, 100 / 8).astype(int).tolist()
    # HolmesVAU get_index(bound=None, ...): centres of 12 segments of [0, 99]
    seg = 99 / 12
    assert frame_indices("segment_centres", 12, info).tolist() == [int(seg / 2 + np.round(seg * i))
                                                                   for i in range(12)]
    # a span in seconds: split_video.py cuts frames 25..49 (int(1.0 * 25) to min(int(2.0 * 25), 99), exclusive)
    # into a 25-frame clip; get_index on it: centres of 4 segments of [0, 24], shifted back by 25
    seg = 24 / 4
    assert frame_indices("segment_centres", 4, info, (1.0, 2.0)).tolist() == [25 + int(seg / 2 + np.round(seg * i))
                                                                              for i in range(4)]
    short = VideoInfo(num_frames=3, fps=25.0, width=32, height=32)
    assert len(frame_indices("vru_arange", 8, short)) == 8 and frame_indices("vru_arange", 8, short).max() <= 2


def test_doc_result_json_names_its_faults():
    doc = Document("x", Path("v.mp4"), "q", "A", {"category": "c"})
    result = score_choice(doc, "")
    assert isinstance(result, DocResult) and result.as_json()["faults"] == ["no_answer_letter"]
