"""Checkpoint writing whose failure names the file: Lightning's ``torch.save`` to a temporary file, renamed into place
by fsspec's transaction (so a failed write leaves the previous ``last.ckpt``), with a full disk or any other I/O error
reported as :class:`~copra_bench.errors.OutputWriteError` naming the path and what to do, not a raw traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from copra_bench.errors import OutputWriteError

from .results import write_error


class NamedCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` whose write errors name the checkpoint (set in the
    trainer config: ``plugins: [{class_path: copra_bench.tracking.checkpoint_io.NamedCheckpointIO}]``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        try:
            super().save_checkpoint(checkpoint, path, storage_options)
        except OutputWriteError:
            raise
        except OSError as err:
            raise write_error(Path(str(path)), err) from err
