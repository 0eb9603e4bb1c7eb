# Launch: .venv/bin/python data_prepare/covtype.py --raw covtype.data.gz
#         [--out prepared/covtype] [--seed N] [--test-fraction F]
"""Prepare UCI Forest Covertype (covtype.data or covtype.data.gz): the same as `gdcode prepare covtype ...`.

The preparation itself lives in :mod:`gdcode.data.prepare.papers` (installed with gdcode, so
every host of a cluster has it); this script only forwards its arguments.
"""

import sys

from gdcode.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "covtype", *sys.argv[1:]]))
