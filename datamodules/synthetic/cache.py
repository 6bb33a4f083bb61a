"""The cache of generated synthetic worlds: one folder per (layout, spec, frames, generator version).

:func:`ensure_synthetic` generates a world on first use under ``$COPRA_CACHE_DIR`` (or ``~/.cache/copra_bench``) and
reuses it afterwards; concurrent processes (e.g. DDP ranks) may race, and the loser uses the winner's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from copra_bench.datamodules.synthetic.layouts import COMPLETE_MARKER, layout_generator
from copra_bench.datamodules.synthetic.spec import GENERATOR_VERSION, SyntheticSpec


def cache_path(spec: SyntheticSpec, *, layout: str = "ucf_crime", cache_dir: str | Path | None = None,
               frames: bool = False) -> Path:
    """Where :func:`ensure_synthetic` keeps ``spec``: ``<cache>/synthetic/<layout>[-frames]-<domain>-<12-char sha1>``.
    """
    layout_generator(layout)
    root = Path(cache_dir or os.environ.get("COPRA_CACHE_DIR") or "~/.cache/copra_bench").expanduser()
    key: list = [layout, asdict(spec), GENERATOR_VERSION] + (["frames"] if frames else [])
    payload = json.dumps(key, sort_keys=True)
    name = f"{layout}{'-frames' if frames else ''}-{spec.domain}"
    return root / "synthetic" / f"{name}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"


def ensure_synthetic(spec: SyntheticSpec, *, layout: str = "ucf_crime", cache_dir: str | Path | None = None,
                     progress: bool = True, frames: bool = False) -> Path:
    """Return a complete synthetic dataset for ``spec``, generating it into the cache only if needed.

    A cached folder is reused (untouched) when it holds the ``.complete`` marker. Otherwise the data is generated in a
    temporary sibling folder that is renamed into place at the end, so an interrupted run never leaves a folder that
    looks complete, and of two processes racing, the loser uses the winner's folder.

    Args:
        spec: what to synthesise.
        layout: a key of :data:`LAYOUTS`.
        cache_dir: cache root; default ``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``.
        progress: show a progress bar while generating.
        frames: write frame folders instead of video files (see the layout's generator).

    Returns:
        The dataset root folder.
    """
    generate = layout_generator(layout)
    final = cache_path(spec, layout=layout, cache_dir=cache_dir, frames=frames)
    if (final / COMPLETE_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        generate(tmp, spec, progress=progress, **({"frames": True} if frames else {}))
        for _ in range(5):
            try:
                os.replace(tmp, final)  # atomic; fails if `final` exists and is not empty
                return final
            except OSError:
                if (final / COMPLETE_MARKER).is_file():
                    return final  # another process won the race: use theirs
            # an incomplete leftover not written by this function: move it aside and retry
            stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                os.replace(final, stale)
            except OSError:
                continue
            if (stale / COMPLETE_MARKER).is_file():  # it completed in the meantime: put it back
                try:
                    os.replace(stale, final)
                    return final
                except OSError:
                    pass
            shutil.rmtree(stale, ignore_errors=True)
        raise RuntimeError(f"could not move the generated dataset into place at {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
