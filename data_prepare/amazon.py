# Launch: .venv/bin/python data_prepare/amazon.py --raw train.csv
#         [--out prepared/amazon] [--seed N] [--test-fraction F]
"""Prepare Amazon Employee Access (Kaggle train.csv): the same as `gdcode prepare amazon ...`.

The preparation itself lives in :mod:`gdcode.data.prepare.papers` (installed with gdcode, so
every host of a cluster has it); this script only forwards its arguments.
"""

import sys

from gdcode.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "amazon", *sys.argv[1:]]))
