"""The words of the synthetic transfer set: what each event, place and light is called, questions and captions.

Every synthetic video's plan is known exactly (its domain, its events and their frames), so each question has one
right answer and each caption says what really happens. The phrasing follows the real benchmarks: VRU-Accident's
questions end with "Choose the correct option (A, B, C, or D) without any explanations." and its options are one
string ``"A. ..., B. ..., C. ..., D. ..."``; HIVAU-70K's answers are judgements ("An anomaly exists, specifically
named ...") and descriptions of the event.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CATEGORIES", "EVENT_PHRASES", "LIGHTING", "LOCATION", "NORMAL_PHRASE", "caption_of", "mc_question",
           "timing_answer"]

#: anomaly kind -> what a caption says happens
EVENT_PHRASES = {
    "Fighting": "two people fight each other",
    "Explosion": "an explosion bursts into a fireball and smoke",
    "Arson": "a fire is set and grows with rising smoke",
    "RoadAccidents": "two cars crash into each other",
    "Robbery": "a person runs at another person, knocks them down and takes their bag",
    "Vandalism": "a person sprays paint on the wall",
}
NORMAL_PHRASE = "people walk around and nothing unusual happens"
#: domain -> (location, lighting) as the questions name them
LOCATION = {"A": "a pedestrian plaza", "B": "a city street with traffic", "C": "an indoor store"}
LIGHTING = {"A": "sunny day", "B": "night", "C": "fluorescent indoor light"}
_LIGHT_PHRASE = {"A": "on a sunny day", "B": "at night", "C": "under fluorescent indoor light"}
_LOCATION_DISTRACTORS = ("a parking garage", "a beach", "a train platform", "a school yard")
_LIGHTING_DISTRACTORS = ("foggy morning", "snowy afternoon", "dusk under street lamps")
TIMING = ("in the first third of the video", "in the middle third of the video", "in the last third of the video",
          "there is no unusual event")

_SUFFIX = " Choose the correct option (A, B, C, or D) without any explanations."
#: category -> question (the categories play the role of VRU-Accident's six)
CATEGORIES = {
    "event type": "What happens in the video?" + _SUFFIX,
    "location": "Where does the video take place?" + _SUFFIX,
    "lighting": "What's the weather and lighting?" + _SUFFIX,
    "event time": "When does the unusual event start?" + _SUFFIX,
}


def _options(rng: np.random.Generator, answer: str, distractors: list[str]) -> tuple[str, str]:
    """``("A. ..., B. ..., C. ..., D. ...", letter of the answer)`` with the answer at a random position."""
    picked = [d for d in distractors if d != answer]
    choice = [answer] + [picked[i] for i in rng.choice(len(picked), 3, replace=False)]
    order = rng.permutation(4)
    options = [choice[i] for i in order]
    letter = "ABCD"[int(np.flatnonzero(order == 0)[0])]
    return ", ".join(f"{'ABCD'[i]}. {text}" for i, text in enumerate(options)), letter


def timing_answer(events: list[tuple[int, int, str]], num_frames: int) -> str:
    """Which third of the video the first event starts in (or that there is none)."""
    if not events:
        return TIMING[3]
    return TIMING[min(2, int(3 * events[0][0] / num_frames))]


def mc_question(category: str, domain: str, events: list[tuple[int, int, str]], num_frames: int,
                rng: np.random.Generator) -> dict[str, str]:
    """One VRU-Accident-format question ``{"question", "options", "GT"}`` about a synthetic video."""
    if category == "event type":
        answer = EVENT_PHRASES[events[0][2]] if events else NORMAL_PHRASE
        pool = [*EVENT_PHRASES.values(), NORMAL_PHRASE]
    elif category == "location":
        answer, pool = LOCATION[domain], [*LOCATION.values(), *_LOCATION_DISTRACTORS]
    elif category == "lighting":
        answer, pool = LIGHTING[domain], [*LIGHTING.values(), *_LIGHTING_DISTRACTORS]
    else:
        answer, pool = timing_answer(events, num_frames), list(TIMING)
    options, letter = _options(rng, answer, pool)
    return {"question": CATEGORIES[category], "options": options, "GT": letter}


def caption_of(domain: str, events: list[tuple[int, int, str]], fps: int) -> str:
    """The template caption of a video: where, under which light, what happens and when (seconds)."""
    head = f"The video shows {LOCATION[domain]} {_LIGHT_PHRASE[domain]}."
    if not events:
        return f"{head} In it, {NORMAL_PHRASE}."
    return " ".join([head, *(f"From {s / fps:.1f} s to {e / fps:.1f} s, {EVENT_PHRASES[k]}." for s, e, k in events)])


def judgement_of(events: list[tuple[int, int, str]]) -> str:
    """HIVAU-style judgement answer."""
    if not events:
        return "No anomaly exists in the video."
    return f"An anomaly exists, specifically named {events[0][2]}."


def description_of(domain: str, kind: str) -> str:
    """HIVAU-style event description."""
    return f"The anomaly event is that {EVENT_PHRASES[kind]} in {LOCATION[domain]}."
