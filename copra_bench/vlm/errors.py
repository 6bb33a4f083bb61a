"""The user-facing error of the VLM layer."""

from __future__ import annotations

from copra_bench.errors import CopraError

__all__ = ["BackboneError"]


class BackboneError(CopraError, ValueError):
    """A user-facing error about choosing, loading or feeding a VLM backbone."""
