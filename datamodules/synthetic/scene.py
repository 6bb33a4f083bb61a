"""The normal part of a synthetic video: camera domains, shapes, and the plan of a scene (pure numpy, vectorised).

A video is described by a :class:`VideoPlan` (static background, normal "people" and traffic as :class:`Shape`
tracks, per-frame flicker, a noise key) plus a list of :class:`EventPlan` (the anomalies, planned by
:mod:`~copra_bench.datamodules.synthetic.events`). :mod:`~copra_bench.datamodules.synthetic.render` composites
them into frames. Normal content and noise never depend on the events, so ``render_video(plan, events=[])`` is the
same video without its anomalies and the two differ only on frames inside the events ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DomainStyle:
    """Look of one camera domain: background, people, camera, and which anomaly kinds happen there.

    Sizes and speeds are fractions of the frame size (speeds per second), colours are RGB 0-255.
    """

    name: str
    index: int  # stable integer used in seeding (never reuse one)
    description: str
    sky: tuple[RGB, RGB]  # top, horizon (walls for indoor domains)
    ground: tuple[RGB, RGB]  # far, near
    horizon: float
    floor: str  # "plain" | "road" | "tiles"
    structure_colors: tuple[RGB, ...]  # buildings / shelves standing on the horizon
    window_color: RGB
    window_lit: float  # probability that a window cell is drawn
    num_structures: tuple[int, int]
    texture_sigma: float
    agent_shape: str  # "ellipse" | "rect"
    agent_size: tuple[float, float]  # body half-height, half-width
    agent_colors: tuple[RGB, ...]
    head_color: RGB
    walk_speed: float
    num_agents: tuple[int, int]  # inclusive range
    car_colors: tuple[RGB, ...]
    normal_cars: tuple[int, int]  # benign passing cars per video, inclusive range
    noise_sigma: float
    flicker: float  # relative brightness flicker amplitude
    anomaly_kinds: tuple[str, ...]


DOMAINS: dict[str, DomainStyle] = {
    "A": DomainStyle(
        name="A", index=0, description="sunny pedestrian plaza, clean camera",
        sky=((150, 190, 235), (205, 222, 240)), ground=((160, 155, 135), (195, 185, 155)), horizon=0.38,
        floor="plain", structure_colors=((190, 150, 120), (170, 170, 180), (210, 190, 150)),
        window_color=(70, 85, 110), window_lit=1.0, num_structures=(2, 4), texture_sigma=4.0,
        agent_shape="ellipse", agent_size=(0.07, 0.032),
        agent_colors=((40, 60, 170), (30, 130, 70), (150, 40, 140), (210, 170, 30), (200, 60, 50)),
        head_color=(230, 190, 160), walk_speed=0.07, num_agents=(2, 5), car_colors=((200, 30, 30), (30, 30, 200)),
        normal_cars=(0, 0), noise_sigma=2.0, flicker=0.01, anomaly_kinds=("Fighting", "Explosion", "Arson")),
    "B": DomainStyle(
        name="B", index=1, description="night street with traffic, noisy camera",
        sky=((10, 14, 35), (30, 35, 65)), ground=((45, 47, 55), (72, 72, 80)), horizon=0.32, floor="road",
        structure_colors=((40, 40, 55), (55, 45, 45), (35, 50, 50)), window_color=(235, 205, 100), window_lit=0.5,
        num_structures=(3, 5), texture_sigma=6.0, agent_shape="rect", agent_size=(0.085, 0.04),
        agent_colors=((200, 200, 210), (180, 100, 60), (90, 170, 180), (160, 160, 70)), head_color=(200, 170, 150),
        walk_speed=0.1, num_agents=(2, 5), car_colors=((220, 220, 230), (200, 40, 40), (40, 90, 200), (230, 200, 40)),
        normal_cars=(0, 2), noise_sigma=6.0, flicker=0.04, anomaly_kinds=("Fighting", "RoadAccidents", "Robbery")),
    "C": DomainStyle(
        name="C", index=2, description="indoor store under fluorescent light",
        sky=((175, 200, 180), (160, 185, 165)), ground=((170, 170, 160), (205, 205, 195)), horizon=0.45,
        floor="tiles", structure_colors=((120, 90, 60), (100, 100, 110)), window_color=(220, 80, 80),
        window_lit=0.7, num_structures=(2, 3), texture_sigma=3.0, agent_shape="ellipse", agent_size=(0.09, 0.04),
        agent_colors=((60, 60, 60), (30, 90, 160), (170, 50, 50), (90, 140, 60)), head_color=(220, 180, 150),
        walk_speed=0.06, num_agents=(2, 4), car_colors=((90, 90, 90),), normal_cars=(0, 0), noise_sigma=3.5,
        flicker=0.02, anomaly_kinds=("Vandalism", "Robbery", "Arson")),
}


@dataclass
class Shape:
    """A filled ellipse or rectangle present on frames ``t0 .. t0 + n - 1`` with per-frame geometry and colour."""

    t0: int
    kind: str
    cy: np.ndarray
    cx: np.ndarray
    ry: np.ndarray
    rx: np.ndarray
    color: np.ndarray  # (n, 3)
    alpha: np.ndarray  # (n,)

    @classmethod
    def make(cls, t0: int, n: int, kind: str, cy, cx, ry, rx, color, alpha=1.0) -> Shape:
        def arr(v, shape):
            return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float32), shape))

        return cls(int(t0), kind, arr(cy, (n,)), arr(cx, (n,)), arr(np.maximum(ry, 0.6), (n,)),
                   arr(np.maximum(rx, 0.6), (n,)), arr(color, (n, 3)), arr(alpha, (n,)))

    @property
    def n(self) -> int:
        return len(self.cy)


@dataclass
class EventPlan:
    """One anomaly: frames ``[start, end)``, its UCF-Crime class, what it draws and its global additive flashes."""

    kind: str
    start: int
    end: int
    shapes: list[Shape] = field(default_factory=list)
    flash: np.ndarray | None = None  # (end - start, 3) added to every pixel


@dataclass
class VideoPlan:
    """Everything needed to render one video except the events (kept in ``events``)."""

    style: DomainStyle
    num_frames: int
    size: int
    background: np.ndarray  # (H, W, 3) float32
    shapes: list[Shape]
    flicker: np.ndarray  # (T,) multiplicative
    noise_key: tuple[int, ...]
    events: list[EventPlan] = field(default_factory=list)


@dataclass(frozen=True)
class SceneContext:
    """What event planners need to know of the scene: its style, frame size, rate, ground top and road line."""

    style: DomainStyle
    size: int
    fps: int
    ground_top: float
    road_y: float | None

    def ground_y(self, rng: np.random.Generator, lo: float = 0.25, hi: float = 0.85) -> float:
        """A y coordinate inside the ground area, ``lo``/``hi`` as fractions of the ground height."""
        return self.ground_top + (self.size - self.ground_top) * rng.uniform(lo, hi)


def seeded_rng(key: Sequence[int]) -> np.random.Generator:
    """The generator of a seeding key (a fixed-length integer tuple)."""
    return np.random.default_rng([int(k) for k in key])


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect an unbounded path into ``[lo, hi]`` (bouncing at the borders)."""
    span = max(hi - lo, 1e-3)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    kernel = np.hanning(2 * width + 3)[1:-1]
    x = np.convolve(rng.standard_normal(n + 2 * width), kernel / np.sqrt((kernel**2).sum()), mode="same")
    return x[width:width + n]


def person_shapes(ctx: SceneContext, t0: int, cy, cx, color, lying=None) -> list[Shape]:
    """Body + head of a person whose body centre follows (cy, cx); ``lying`` (per frame) lays the body flat."""
    cy, cx = np.asarray(cy, np.float32), np.asarray(cx, np.float32)
    n = len(cy)
    ry, rx = ctx.style.agent_size[0] * ctx.size, ctx.style.agent_size[1] * ctx.size
    lying = np.zeros(n, bool) if lying is None else np.asarray(lying, bool)
    hr = max(0.8 * rx, 0.8)
    body = Shape.make(t0, n, ctx.style.agent_shape, cy, cx, np.where(lying, rx, ry), np.where(lying, ry, rx), color)
    head = Shape.make(t0, n, "ellipse", np.where(lying, cy, cy - ry - 0.7 * hr),
                      np.where(lying, cx - ry - 0.7 * hr, cx), hr, hr, ctx.style.head_color)
    return [body, head]


def culprit_color(ctx: SceneContext) -> RGB:
    """Clothes of a culprit that contrast with the ground (black by day, white at night)."""
    return (20, 20, 25) if np.mean(ctx.style.ground) > 110 else (240, 240, 240)


def walk_bounds(ctx: SceneContext) -> tuple[float, float, float, float]:
    s, (ry, rx) = ctx.size, ctx.style.agent_size
    y_lo = ctx.ground_top + ry * s * 0.5
    return y_lo, max(s - ry * s - 1, y_lo + 1), rx * s, s - rx * s - 1


def _background(ctx: SceneContext, rng: np.random.Generator) -> np.ndarray:
    st, s = ctx.style, ctx.size
    y = np.arange(s, dtype=np.float32)[:, None, None]
    hz = ctx.ground_top
    sky0, sky1 = (np.array(c, np.float32) for c in st.sky)
    g0, g1 = (np.array(c, np.float32) for c in st.ground)
    a = np.clip(y / max(hz, 1), 0, 1)
    b = np.clip((y - hz) / max(s - hz, 1), 0, 1)
    bg = np.where(y < hz, sky0 + a * (sky1 - sky0), g0 + b * (g1 - g0)) * np.ones((1, s, 1), np.float32)
    yy, xx = np.mgrid[0:s, 0:s]
    for _ in range(rng.integers(st.num_structures[0], st.num_structures[1] + 1)):
        w, h = rng.uniform(0.1, 0.25) * s, rng.uniform(0.35, 0.9) * hz
        x0 = rng.uniform(-0.05, 0.95) * s
        m = (xx >= x0) & (xx < x0 + w) & (yy >= hz - h) & (yy < hz)
        bg[m] = np.array(st.structure_colors[rng.integers(len(st.structure_colors))]) + rng.normal(0, 8, 3)
        cell = max(2, s // 16)
        lit = rng.random((s // cell + 1, s // cell + 1)) < st.window_lit
        win = m & ((yy // cell) % 2 == 1) & ((xx // cell) % 2 == 1) & (xx >= x0 + 1) & (xx < x0 + w - 1)
        bg[win & lit[yy // cell, xx // cell]] = st.window_color
    if st.floor == "road" and ctx.road_y is not None:
        half = 0.09 * s
        bg[(yy >= ctx.road_y - half) & (yy <= ctx.road_y + half)] *= 0.7
        dash = (np.abs(yy - ctx.road_y) < max(0.6, s / 96)) & ((xx // max(2, s // 10)) % 2 == 0)
        bg[dash] = (200, 190, 120)
    elif st.floor == "tiles":
        cell = max(2, s // 8)
        bg[(yy >= hz) & (((yy // cell) + (xx // cell)) % 2 == 0)] *= 0.9
    coarse = rng.normal(0, st.texture_sigma, (s // 8 + 1, s // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:s, :s]
    return (bg + coarse + rng.normal(0, st.texture_sigma * 0.5, (s, s, 3))).astype(np.float32)


def plan_scene(style: DomainStyle, *, scene_key: Sequence[int], noise_key: Sequence[int], num_frames: int, fps: int,
               size: int) -> tuple[VideoPlan, SceneContext]:
    """Draw the normal part of a video (background, walkers, benign traffic, flicker).

    ``scene_key`` seeds the scene; chunk ``c`` of the camera noise is seeded with ``noise_key + (c,)``. Keys of one
    video should all have the same length (numpy seeding ignores trailing zeros).
    """
    rng = seeded_rng(scene_key)
    ground_top = style.horizon * size
    road_y = ground_top + (size - ground_top) * rng.uniform(0.45, 0.65) if style.floor == "road" else None
    ctx = SceneContext(style, size, fps, ground_top, road_y)
    bg = _background(ctx, rng)
    t, shapes = num_frames, []
    for _ in range(rng.integers(style.normal_cars[0], style.normal_cars[1] + 1)):
        hx, v = 0.12 * size, rng.uniform(0.25, 0.4) * size / fps * rng.choice([-1, 1])
        n = min(int(np.ceil((size + 2 * hx) / abs(v))) + 1, t)
        t0 = int(rng.integers(0, max(t - n, 0) + 1))
        x = (-hx if v > 0 else size + hx) + v * np.arange(n)
        y = (road_y if road_y is not None else ctx.ground_y(rng)) + np.sign(v) * 0.04 * size
        color = style.car_colors[rng.integers(len(style.car_colors))]
        shapes.append(Shape.make(t0, n, "rect", y, x, 0.05 * size, hx, color))
    y_lo, y_hi, x_lo, x_hi = walk_bounds(ctx)
    for _ in range(rng.integers(style.num_agents[0], style.num_agents[1] + 1)):
        speed = style.walk_speed * size / fps * rng.uniform(0.7, 1.3)
        speed = speed * np.clip(1 + 0.6 * _smooth_noise(rng, t, fps), 0.1, 1.6)
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(0.05 * _smooth_noise(rng, t, fps))
        cy = _fold(rng.uniform(y_lo, y_hi) + np.cumsum(speed * np.sin(heading)), y_lo, y_hi)
        cx = _fold(rng.uniform(x_lo, x_hi) + np.cumsum(speed * np.cos(heading)), x_lo, x_hi)
        shapes += person_shapes(ctx, 0, cy, cx, style.agent_colors[rng.integers(len(style.agent_colors))])
    tt = np.arange(t)
    flicker = 1 + style.flicker * (np.sin(2 * np.pi * tt / (fps * rng.uniform(1.5, 4)) + rng.uniform(0, 6.3))
                                   + 0.5 * rng.standard_normal(t)) / 1.5
    plan = VideoPlan(style, num_frames, size, bg, shapes, flicker.astype(np.float32),
                     tuple(int(k) for k in noise_key))
    return plan, ctx
