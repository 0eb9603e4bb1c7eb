"""Write a prepared dataset directory: ``gdcode prepare KIND [--raw FILE] [--out DIR] [...]``.

KIND: amazon, covtype, kc_house (the gradient-coding papers' datasets, from their raw files),
mnist (MNIST or Fashion-MNIST, from the directory of their IDX files), svmlight, csv, npz,
sklearn, synthetic. The directory (``meta.json`` plus ``.npy`` files) is
what ``gdcode run --dataset DIR`` reads; each worker reads only its own rows. Exit codes:
0 written, 2 bad input (nothing is left behind).
"""

from __future__ import annotations

import argparse
import json
import sys

from gdcode.data.prepare import KINDS, PrepareOptions, prepare
from gdcode.data.prepare.readers import ZERO_BASED

#: the Examples section of the help page
EXAMPLES = """\
gdcode prepare sklearn --name digits --task binary
gdcode prepare svmlight --raw a9a.txt --test-fraction 0      # 0- or 1-based indices detected
gdcode prepare csv --raw data.csv --label outcome --drop id,date --standardize
gdcode prepare covtype --download --out prepared/covtype
gdcode prepare synthetic --rows 1000000 --cols 100000 --sparse --nnz-per-row 84
gdcode run --dataset prepared/sklearn-digits --workers 4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "kinds:\n" + "\n".join(f"  {k:<10} {v}" for k, v in KINDS.items())
    parser.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    g = parser.add_argument_group("every kind")
    g.add_argument("--out", metavar="DIR", help="directory to write (default: prepared/NAME)")
    g.add_argument("--force", action="store_true", help="replace an existing prepared directory")
    g.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="held-out fraction, 0 keeps every row for training (default: 0.2)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split (and of the generator)")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale columns by the training rows' std (dense: and centre them); default on "
                        "for sklearn (as --dataset sklearn:NAME), off for the other kinds")
    g.add_argument("--json", action="store_true", help="print meta.json instead of a summary")
    g = parser.add_argument_group("raw files")
    g.add_argument("--raw", metavar="FILE", help="the raw data file (plain or .gz); mnist: the directory "
                                                 "of its four IDX files")
    g.add_argument("--download", action="store_true",
                   help="fetch the raw file (covtype; the Kaggle sets explain how to get theirs)")
    g.add_argument("--task", choices=("binary", "multiclass", "regression"),
                   help="svmlight, csv, npz, sklearn: the labels' task (default: binary; "
                        "sklearn: the set's own)")
    g.add_argument("--positive", metavar="LABEL",
                   help="binary: this label is +1, every other -1 (needed beyond two classes)")
    g.add_argument("--label", metavar="COLUMN", help="csv: the label column (a header name)")
    g.add_argument("--drop", metavar="COL[,COL...]", type=lambda s: [c for c in s.split(",") if c],
                   help="csv: columns to leave out (ids, dates)")
    g.add_argument("--delimiter", metavar="C", help="csv: field separator (default: ,)")
    g.add_argument("--zero-based", nargs="?", const="yes", default="auto", choices=ZERO_BASED,
                   metavar="auto|yes|no",
                   help="svmlight: whether indices start at 0; auto (the default) reads a file with an "
                        "index 0 as 0-based and any other as 1-based, as scikit-learn does; "
                        "--zero-based alone is yes")
    g.add_argument("--bins", type=int, metavar="N",
                   help="covtype: quantile bins per numeric column "
                        "(default 0: one per distinct value)")
    g.add_argument("--one-hot-all", action="store_true",
                   help="kc_house: one-hot every column, as ErasureHead did")
    g.add_argument("--fashion", action="store_true",
                   help="mnist: the files are Fashion-MNIST's (class names, default --out)")
    g.add_argument("--dtype", choices=("float32", "float64"),
                   help="mnist: stored feature values (default: float32)")
    g = parser.add_argument_group("sklearn and synthetic")
    g.add_argument("--name", metavar="NAME", help="sklearn: breast_cancer, digits, diabetes, "
                                                  "wine, iris")
    g.add_argument("--rows", type=int, help="synthetic: number of rows")
    g.add_argument("--cols", type=int, help="synthetic: number of columns")
    g.add_argument("--sparse", action="store_true", help="synthetic: CSR rows with few values each")
    g.add_argument("--nnz-per-row", type=int, metavar="K",
                   help="synthetic --sparse: values per row")
    g.add_argument("--density", type=float, metavar="P", help="synthetic --sparse: K = P * cols")


def main(args: argparse.Namespace) -> int:
    opts = PrepareOptions(**{f: getattr(args, f) for f in PrepareOptions.__dataclass_fields__})

    def progress(done: int, total: int) -> None:
        if total >= 1_000_000:
            print(f"\r  {done}/{total} rows", end="", file=sys.stderr, flush=True)

    path, meta = prepare(args.kind, opts, progress=progress)
    if meta.get("source", {}).get("kind") == "synthetic" and meta["source"]["rows"] >= 1_000_000:
        print(file=sys.stderr)
    if args.json:
        print((path / "meta.json").read_text(), end="")
        return 0
    full = json.loads((path / "meta.json").read_text())
    shape = (f"{full['rows_train']} training rows, {full['rows_test']} held out, "
             f"{full['cols']} columns, {full['storage']}")
    if full["storage"] == "csr":
        shape += f", {full['nnz_train'] + full['nnz_test']} stored values"
    print(f"wrote {path}: {shape}; task {full['task']} ({full['label_rule']})")
    return 0
