"""What the fault-injection tests share (issue 14): the small cross-domain run through the CLI as a user types it, its
run directories, and a video cut short with its header intact."""

from __future__ import annotations

from pathlib import Path

import av
import yaml

from copra_bench.cli import main

from .conftest import REPO, small_cross_domain

CONFIGS = REPO / "configs"
MAIN = str(CONFIGS / "cross_domain.yaml")
FROZEN = str(CONFIGS / "model" / "frozen_tiny.yaml")
#: What every run here can do without: a sanity validation pass, the full bootstrap.
QUICK = ("--trainer.num_sanity_val_steps", "0", "--model.init_args.bootstrap_samples", "20")


def write_yaml(path: Path, document: dict) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


def data_config(tmp_path: Path, cache: Path, **overrides) -> str:
    """The small cross-domain data (COPRA batch 1, as the tiny default)."""
    return write_yaml(tmp_path / "data.yaml", small_cross_domain(cache, **{"frames_per_window": 4, "batch_size": 1,
                                                                       **overrides}))


def trainer_checkpointing_every_step(tmp_path: Path) -> str:
    trainer = yaml.safe_load((CONFIGS / "trainer" / "default.yaml").read_text())
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 1
    return write_yaml(tmp_path / "trainer.yaml", trainer)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([*argv, *QUICK] if argv[0] in ("fit", "test") else list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "outputs").rglob("config.yaml"))



def truncate_keeping_header(video: Path) -> None:
    """Cut ``video`` in half with its header (``moov``) moved to the front: probing still reads the frame count,
    decoding fails half-way, as with a copy that stopped mid-download."""
    fast = video.with_name("faststart.mp4")
    with av.open(str(video)) as source, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = fast.read_bytes()
    fast.unlink()
    assert data.find(b"moov") < data.find(b"mdat")
    video.write_bytes(data[: len(data) // 2])
