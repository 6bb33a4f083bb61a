"""The real annotation files of the public benchmarks, shipped with the package (no video is included).

``<dataset>/`` holds the official split lists, temporal annotations and frame masks exactly as published (byte for
byte; where each file comes from and its sha256 are in ``SOURCES.md``, which ``tests/test_shipped_annotations.py``
checks). The release readers use these copies by default (``annotations: shipped``), so a dataset root needs the
videos only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from copra_bench.errors import DataError

#: Folder of the shipped files: ``ucf_crime/``, ``xd_violence/``, ``shanghaitech/``, ``SOURCES.md``.
ANNOTATIONS_DIR = Path(__file__).resolve().parent
SOURCES = ANNOTATIONS_DIR / "SOURCES.md"
DATASETS = ("ucf_crime", "xd_violence", "shanghaitech")
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


def shipped(dataset: str, name: str = "") -> Path:
    """The shipped folder of ``dataset`` (or the file/folder ``name`` inside it).

    Raises:
        DataError: an unknown dataset, or a file that is not shipped.
    """
    if dataset not in DATASETS:
        raise DataError(f"no annotation files are shipped for {dataset!r}; shipped: {', '.join(DATASETS)}")
    path = ANNOTATIONS_DIR / dataset / name
    if not path.exists():
        raise DataError(f"{path} is missing from the installed package: reinstall copra_bench "
                        f"(the shipped files are listed in {SOURCES})")
    return path


def shipped_files() -> list[str]:
    """Every shipped data file, relative to :data:`ANNOTATIONS_DIR` (``ucf_crime/Anomaly_Test.txt`` ...)."""
    return sorted(str(p.relative_to(ANNOTATIONS_DIR)) for d in DATASETS for p in (ANNOTATIONS_DIR / d).rglob("*")
                  if p.is_file())


def recorded_checksums() -> dict[str, str]:
    """``{relative path: sha256}`` as written in the checksum block of ``SOURCES.md``."""
    return {m.group(2): m.group(1) for line in SOURCES.read_text().splitlines()
            if (m := _CHECKSUM_LINE.match(line.strip()))}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
