"""``python -m gdcode``: the same as the ``gdcode`` console script."""

import sys

from gdcode.cli import main

if __name__ == "__main__":
    sys.exit(main())
