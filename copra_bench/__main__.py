"""``python -m copra_bench`` and the ``copra-bench`` console script."""

import gc
import sys

from copra_bench.cli import main


def run() -> None:
    """Run the CLI and exit with its status."""
    try:
        sys.exit(main())
    finally:
        # The process ends here: what it wrote is closed and flushed, and the atexit handlers still run. Freezing
        # the heap keeps the interpreter's shutdown from walking the millions of objects torch, Lightning and
        # transformers leave (several seconds per run on a 2-core machine: every sweep child pays it).
        gc.freeze()


if __name__ == "__main__":
    run()
