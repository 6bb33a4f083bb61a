"""Compare a release's own list/annotation files with the shipped copies (used by ``data inspect``).

Files are compared by what they say, not byte for byte: each line is reduced to ``(video, entry)`` by the dataset's
reader (stem of the name, class, intervals), so a ``.mp4`` suffix, spacing, line endings or line order do not count
as differences; a video listed by one copy only, or with another entry, does. Frame masks are compared value by value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

#: One line of a file -> ``(video, entry)``; None skips the line (blank).
LineKey = Callable[[str], "tuple[str, object] | None"]
SHOWN = 3


def _table(path: Path, key_of: LineKey) -> dict[str, tuple[int, str, object]]:
    table: dict[str, tuple[int, str, object]] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            keyed = key_of(line)
        except (ValueError, IndexError):
            keyed = (line.split()[0] if line.split() else f"line {number}", ("unreadable", line.strip()))
        if keyed is not None:
            table.setdefault(keyed[0], (number, line.strip(), keyed[1]))
    return table


def _few(items: list[str]) -> str:
    return "; ".join(items[:SHOWN]) + (f"; ... ({len(items)} in all)" if len(items) > SHOWN else "")


def compare_files(release: Path, shipped: Path, key_of: LineKey) -> str | None:
    """One line describing how ``release`` differs from ``shipped`` (None: they say the same)."""
    ours, theirs = _table(shipped, key_of), _table(release, key_of)
    only_release = [f"{v} (line {theirs[v][0]}: {theirs[v][1]!r})" for v in theirs if v not in ours]
    only_shipped = [f"{v} (shipped line {ours[v][0]}: {ours[v][1]!r})" for v in ours if v not in theirs]
    changed = [f"{v} (release line {theirs[v][0]}: {theirs[v][1]!r}; shipped line {ours[v][0]}: {ours[v][1]!r})"
               for v in theirs if v in ours and theirs[v][2] != ours[v][2]]
    parts = [f"{len(items)} {what}: {_few(items)}" for what, items in (
        ("videos only in the release copy", only_release), ("videos only in the shipped copy", only_shipped),
        ("videos with a different entry", changed)) if items]
    if not parts:
        return None
    return f"{release} differs from the shipped {shipped.parent.name}/{shipped.name}: " + "; ".join(parts)


def compare_masks(release: Path, shipped: Path, names: Iterable[str]) -> str | None:
    """One line describing how the frame masks ``<name>.npy`` of ``release`` differ from the shipped ones."""
    problems = []
    for name in names:
        ours, theirs = shipped / f"{name}.npy", release / f"{name}.npy"
        if ours.is_file() != theirs.is_file():
            problems.append(f"{name} (mask only in the {'release' if theirs.is_file() else 'shipped'} copy)")
            continue
        if not ours.is_file():
            continue
        try:
            a, b = np.load(theirs).reshape(-1) > 0, np.load(ours).reshape(-1) > 0
        except (OSError, ValueError) as err:
            problems.append(f"{name} (release mask unreadable: {err})")
            continue
        if a.shape != b.shape:
            problems.append(f"{name} (release mask has {a.size} frames, shipped {b.size})")
        elif (a != b).any():
            first = int(np.flatnonzero(a != b)[0])
            problems.append(f"{name} ({int((a != b).sum())} frames differ, the first is frame {first})")
    if not problems:
        return None
    return f"frame masks in {release} differ from the shipped ones: {len(problems)} videos: {_few(problems)}"
