"""``python -m fastssl``: the same as the ``fastssl`` console script."""

import sys

from fastssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
