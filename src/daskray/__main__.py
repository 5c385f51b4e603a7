"""``python -m daskray`` / ``daskray``: ``demo`` (the default), ``bench``, ``tune`` and ``info``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
