"""``python -m copra_bench``."""

import sys

from copra_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
