"""The anomalies of the synthetic world: one planner per UCF-Crime class, drawn over a scene's normal content.

Each planner turns a :class:`~copra_bench.datamodules.synthetic.scene.SceneContext`, a seeded generator and the frames
``[start, start + n)`` into an :class:`~copra_bench.datamodules.synthetic.scene.EventPlan` (its shapes and flashes);
it draws only inside those frames, so events are frame exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from copra_bench.datamodules.synthetic.scene import (
    EventPlan, SceneContext, Shape, culprit_color, person_shapes, walk_bounds,
)


def _fighting(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size, rx = ctx.size, ctx.style.agent_size[1] * ctx.size
    my, mx = ctx.ground_y(rng, 0.35, 0.8), rng.uniform(0.25, 0.75) * size
    na = max(1, round(0.2 * n))
    t = np.arange(n)
    gap = np.where(t < na, 0.25 * size + (1.1 * rx - 0.25 * size) * np.minimum(t / na, 1), 1.1 * rx)
    fight = t >= na
    lunge = np.where(t % 2 == 0, 1.0, -1.0) * 0.4 * rx * fight
    jit = rng.normal(0, 0.035 * size, (4, n)) * fight
    colors = rng.choice(len(ctx.style.agent_colors), 2, replace=False)
    pulse = (40 * np.where(t % 2 == 0, 1, -1) * fight)[:, None]
    shapes = []
    for k, side in enumerate((-1, 1)):
        col = np.clip(np.array(ctx.style.agent_colors[colors[k]], np.float32) + pulse, 0, 255)
        shapes += person_shapes(ctx, s, my + jit[2 * k] * 0.6, mx + side * (gap - lunge) + jit[2 * k + 1], col)
    spark = (rng.random(n) < 0.4) & fight
    shapes.append(Shape.make(s, n, "ellipse", my - 0.02 * size, mx, 0.03 * size, 0.03 * size, (255, 255, 235),
                             spark.astype(np.float32)))
    return EventPlan("Fighting", s, s + n, shapes)


def _explosion(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size = ctx.size
    cy, cx = np.clip(ctx.ground_y(rng, -0.2, 0.7), 0.2 * size, 0.8 * size), rng.uniform(0.2, 0.8) * size
    t = np.arange(n, dtype=np.float32)
    r = np.maximum(1.5, rng.uniform(0.18, 0.3) * size * (1 - np.exp(-(t + 1) / max(1.0, 0.12 * n))))
    fade = np.clip(1.2 * np.exp(-t / (0.45 * n)), 0.25, 1)
    smoke = (80, 80, 85) + rng.normal(0, 6, (n, 1))
    shapes = [Shape.make(s, n, "ellipse", cy - 0.1 * r * t / n, cx, 1.1 * r * (1 + 0.3 * t / n),
                         1.1 * r * (1 + 0.3 * t / n), smoke, 0.75),
              Shape.make(s, n, "ellipse", cy, cx, r * (1 - 0.3 * t / n), r * (1 - 0.3 * t / n), (255, 130, 20), fade),
              Shape.make(s, n, "ellipse", cy, cx, 0.55 * r * np.exp(-t / (0.6 * n)), 0.55 * r * np.exp(-t / (0.6 * n)),
                         (255, 245, 190), fade)]
    flash = 170 * np.exp(-t / max(1.0, 0.08 * n))[:, None] * np.array([1, 0.95, 0.8], np.float32)
    return EventPlan("Explosion", s, s + n, shapes, flash.astype(np.float32))


def _arson(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size = ctx.size
    by, bx = ctx.ground_y(rng, 0.3, 0.85), rng.uniform(0.15, 0.85) * size
    g = 0.25 + 0.75 * np.arange(n) / max(n - 1, 1)
    w = 0.12 * size * g
    palette = np.array([(255, 80, 20), (255, 150, 30), (255, 210, 60), (220, 40, 20)], np.float32)
    shapes = [Shape.make(s, n, "ellipse", by, bx, 0.03 * size * g + 0.5, 1.1 * w, (40, 30, 25)),
              Shape.make(s, n, "ellipse", by - 0.2 * size * g, bx + rng.normal(0, 0.01 * size, n),
                         0.12 * size * g, 0.6 * w, (110, 105, 100), 0.45)]
    for u in rng.uniform(-1, 1, 7):
        h = (0.04 + 0.06 * rng.random(n)) * size * g
        shapes.append(Shape.make(s, n, "ellipse", by - h, bx + u * w, h, 0.03 * size * g + 0.5,
                                 palette[rng.integers(0, 4, n)]))
    flash = (np.array([25, 10, 0], np.float32) * ((0.6 + 0.4 * rng.random(n)) * g)[:, None]).astype(np.float32)
    return EventPlan("Arson", s, s + n, shapes, flash)


def _road_accident(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size, fps = ctx.size, ctx.fps
    hx, hy = 0.12 * size, 0.055 * size
    y = ctx.road_y if ctx.road_y is not None else ctx.ground_y(rng, 0.3, 0.8)
    v1 = rng.uniform(0.9, 1.3) * size / fps
    v2 = v1 * rng.uniform(0.5, 1.0)
    x1_0, x2_0 = 0.2 * hx, size - 0.2 * hx
    tc = int(np.clip(np.ceil((x2_0 - x1_0 - 2 * hx) / (v1 + v2)), 1, n - 1))
    xc = x1_0 + hx + (x2_0 - x1_0 - 2 * hx) * v1 / (v1 + v2)
    t = np.arange(n, dtype=np.float32)
    post = np.clip(t - tc, 0, None)
    back = 0.06 * size * (1 - np.exp(-post / 3)) + rng.normal(0, 0.02 * size, n) * (post > 0) * (post < fps / 3)
    x1 = np.where(t < tc, x1_0 + (xc - hx - x1_0) * t / tc, xc - hx - back)
    x2 = np.where(t < tc, x2_0 + (xc + hx - x2_0) * t / tc, xc + hx + back)
    blink = ((post // max(1, fps // 4)) % 2 == 1) & (post > 0)
    shapes = []
    for x, yy in ((x1, y), (x2, y + rng.normal(0, 0.01 * size))):
        base = np.array(ctx.style.car_colors[rng.integers(len(ctx.style.car_colors))], np.float32)
        shapes.append(Shape.make(s, n, "rect", yy, x, hy, hx, np.clip(base + 70 * blink[:, None], 0, 255)))
        shapes.append(Shape.make(s, n, "rect", yy, x, 0.6 * hy, 0.4 * hx, (40, 50, 70)))
    shapes.append(Shape.make(s, n, "ellipse", y - hy - 0.1 * size * post / n, xc, 0.04 * size + 0.1 * size * post / n,
                             0.04 * size + 0.08 * size * post / n, (120, 120, 120), 0.6 * (post > 0)))
    ang, spd = rng.uniform(0, 2 * np.pi, 6), rng.uniform(0.5, 1.5, 6) * size / fps
    live = (post > 0) & (post < fps / 2)
    for a, v in zip(ang, spd):
        shapes.append(Shape.make(s, n, "rect", y + np.sin(a) * v * post, xc + np.cos(a) * v * post, 0.6, 0.6,
                                 (255, 230, 120), live.astype(np.float32)))
    flash = (60 * np.exp(-post / 2) * (post > 0))[:, None] * np.ones(3, np.float32)
    return EventPlan("RoadAccidents", s, s + n, shapes, flash.astype(np.float32))


def _robbery(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size, fps = ctx.size, ctx.fps
    y_lo, y_hi, x_lo, x_hi = walk_bounds(ctx)
    t = np.arange(n, dtype=np.float32)
    vy, vx = rng.uniform(y_lo, y_hi), rng.uniform(0.3, 0.7) * size
    side = rng.choice([-1.0, 1.0])
    ry0, rx0 = rng.uniform(y_lo, y_hi), (0.04 if side < 0 else 0.96) * size
    walk = 0.3 * ctx.style.walk_speed * size / fps * rng.choice([-1, 1])
    sprint = max(rng.uniform(0.6, 0.9) * size / fps, 5 * ctx.style.walk_speed * size / fps)
    tg = max(1, min(int(np.ceil(np.hypot(vx - rx0, vy - ry0) / sprint)), int(0.4 * n)))
    ns = max(1, round(0.4 * fps))
    vxt = vx + walk * np.minimum(t, tg)
    gx, gy = vxt[tg], vy
    approach = np.minimum(t / tg, 1)
    away = np.clip(t - tg - ns, 0, None) * sprint
    jit = rng.normal(0, 0.02 * size, (2, n)) * ((t >= tg) & (t < tg + ns))
    rob_x = np.where(t <= tg, rx0 + (gx - rx0) * approach, gx - 1.2 * side * ctx.style.agent_size[1] * size
                     + side * away) + jit[0]
    rob_y = np.where(t <= tg, ry0 + (gy - ry0) * approach, gy) + jit[1]
    lying = t >= tg + ns
    vic_y = vy + lying * 0.5 * ctx.style.agent_size[0] * size
    victim_col = ctx.style.agent_colors[rng.integers(len(ctx.style.agent_colors))]
    shapes = (person_shapes(ctx, s, vic_y, vxt - jit[0], victim_col, lying)
              + person_shapes(ctx, s, rob_y, rob_x, culprit_color(ctx)))
    had = t >= tg
    shapes.append(Shape.make(s, n, "rect", np.where(had, rob_y, vic_y), np.where(had, rob_x, vxt) + 0.05 * size,
                             0.02 * size, 0.02 * size, (120, 70, 30)))
    return EventPlan("Robbery", s, s + n, shapes)


def _vandalism(ctx: SceneContext, rng: np.random.Generator, s: int, n: int) -> EventPlan:
    size, fps, hz = ctx.size, ctx.fps, ctx.ground_top
    t = np.arange(n, dtype=np.float32)
    x = np.clip(rng.uniform(0.2, 0.8) * size + 0.12 * size * np.sin(2 * np.pi * t / (1.5 * fps) + rng.uniform(0, 6.3)),
                0.05 * size, 0.95 * size) + rng.normal(0, 0.01 * size, n)
    y = hz + 0.9 * ctx.style.agent_size[0] * size
    shapes = person_shapes(ctx, s, np.full(n, y), x, culprit_color(ctx))
    paint = np.array([(255, 0, 200), (0, 255, 120), (0, 220, 255), (255, 255, 0)], np.float32)
    spawn = rng.random(n) < 0.6
    spawn[0] = True
    for k in np.flatnonzero(spawn):
        r = rng.uniform(0.01, 0.03) * size
        shapes.append(Shape.make(s + k, n - k, "rect" if rng.random() < 0.5 else "ellipse",
                                 rng.uniform(hz - 0.2 * size, hz - 0.03 * size), x[k] + rng.normal(0, 0.04 * size),
                                 r, r * rng.uniform(0.5, 2), paint[rng.integers(4)]))
    shapes.append(Shape.make(s, n, "ellipse", hz - 0.08 * size, x, 0.04 * size, 0.04 * size, (230, 230, 230), 0.5))
    return EventPlan("Vandalism", s, s + n, shapes)


EVENT_RENDERERS: dict[str, Callable[[SceneContext, np.random.Generator, int, int], EventPlan]] = {
    "Fighting": _fighting, "Explosion": _explosion, "Arson": _arson,
    "RoadAccidents": _road_accident, "Robbery": _robbery, "Vandalism": _vandalism,
}


def plan_event(ctx: SceneContext, kind: str, rng: np.random.Generator, start: int, end: int) -> EventPlan:
    """Plan an anomaly of UCF-Crime class ``kind`` on frames ``[start, end)``."""
    return EVENT_RENDERERS[kind](ctx, rng, start, end - start)
