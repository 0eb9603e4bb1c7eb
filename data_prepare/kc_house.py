# Launch: .venv/bin/python data_prepare/kc_house.py --raw kc_house_data.csv
#         [--out prepared/kc_house] [--seed N] [--test-fraction F]
"""Prepare KC house sales (Kaggle kc_house_data.csv): the same as `gdcode prepare kc_house ...`.

The preparation itself lives in :mod:`gdcode.data.prepare.papers` (installed with gdcode, so
every host of a cluster has it); this script only forwards its arguments.
"""

import sys

from gdcode.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "kc_house", *sys.argv[1:]]))
