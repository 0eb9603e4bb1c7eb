"""Preparation of datasets: raw files -> prepared dataset directories (``gdcode prepare KIND``).

Kinds: the gradient-coding papers' datasets (``amazon``, ``covtype``, ``kc_house``, see
:mod:`gdcode.data.prepare.papers`), MNIST and Fashion-MNIST from their IDX files (``mnist``, see
:mod:`gdcode.data.prepare.mnist`), generic formats (``svmlight``, ``csv``, ``npz``), the
scikit-learn bundled sets (``sklearn``) and the seeded generator (``synthetic``). The
directory format is described in :mod:`gdcode.data.prepared`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from gdcode.errors import ConfigError

#: KIND -> one-line description
KINDS: dict[str, str] = {
    "amazon": "Amazon Employee Access (Kaggle train.csv): one-hot of columns and pairs, sparse",
    "covtype": "UCI Forest Covertype (covtype.data): class 1 vs 2, binned one-hot, sparse",
    "kc_house": "KC house sales (kc_house_data.csv): price/1e6, one-hot categorical, sparse",
    "mnist": "MNIST or Fashion-MNIST (--raw DIR of the IDX files, --fashion): pixels/255, 10 classes",
    "svmlight": "svmlight/libsvm text file (--raw)",
    "csv": "delimited text with a header line (--raw, --label COLUMN)",
    "npz": "numpy .npz archive: X and y, or CSR data/indices/indptr/shape and y (--raw)",
    "sklearn": "a dataset bundled with scikit-learn (--name)",
    "synthetic": "the seeded Gaussian mixture, dense or --sparse (--rows, --cols)",
}

_COMMON = {"out", "force", "test_fraction", "seed", "standardize"}
_PAPER = {"raw", "download"}
_GENERIC = {"raw", "task", "positive"}
#: KIND -> the options that apply to it (beside the common ones)
KIND_OPTIONS: dict[str, set[str]] = {
    "amazon": _PAPER,
    "covtype": _PAPER | {"bins"},
    "kc_house": _PAPER | {"one_hot_all"},
    "mnist": {"raw", "fashion", "dtype"},
    "svmlight": _GENERIC | {"zero_based"},
    "csv": _GENERIC | {"label", "drop", "delimiter"},
    "npz": _GENERIC,
    "sklearn": {"name", "task", "positive"},
    "synthetic": {"rows", "cols", "sparse", "nnz_per_row", "density"},
}
_NOT_FOR = {"synthetic": {"standardize"}, "mnist": {"test_fraction"}}


@dataclasses.dataclass
class PrepareOptions:
    """Options of ``gdcode prepare`` (None: not given).

    ``standardize`` None is the kind's own default: on for ``sklearn`` (the features
    ``--dataset sklearn:NAME`` trains on), off for every other kind. ``zero_based`` is
    ``auto`` (detected from the file), ``yes`` or ``no`` (svmlight).
    """

    out: str | None = None
    raw: str | None = None
    download: bool = False
    force: bool = False
    test_fraction: float = 0.2
    seed: int = 0
    standardize: bool | None = None
    task: str | None = None
    positive: str | None = None
    label: str | None = None
    drop: list[str] | None = None
    delimiter: str | None = None
    zero_based: bool | str = "auto"
    name: str | None = None
    rows: int | None = None
    cols: int | None = None
    sparse: bool = False
    nnz_per_row: int | None = None
    density: float | None = None
    bins: int | None = None
    one_hot_all: bool = False
    fashion: bool = False
    dtype: str | None = None

    def given(self) -> set[str]:
        """The options given a value other than their default."""
        defaults = PrepareOptions()
        return {f.name for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(defaults, f.name)}


def check_options(kind: str, opts: PrepareOptions) -> None:
    """ConfigError for an unknown kind or an option that does not apply to it."""
    if kind not in KINDS:
        raise ConfigError(f"unknown KIND {kind!r}; choose one of: {', '.join(KINDS)}")
    allowed = (KIND_OPTIONS[kind] | _COMMON) - _NOT_FOR.get(kind, set())
    extra = sorted(opts.given() - allowed)
    if extra:
        flags = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise ConfigError(f"{flags} does not apply to `gdcode prepare {kind}`; see "
                          f"`gdcode prepare --help`")


def default_out(kind: str, opts: PrepareOptions) -> Path:
    """``prepared/NAME`` when --out is not given."""
    if kind == "sklearn":
        return Path("prepared") / f"sklearn-{opts.name}"
    if kind == "synthetic":
        suffix = f"-sparse{_nnz_per_row(opts)}" if opts.sparse else ""
        return Path("prepared") / f"synthetic-{opts.rows}x{opts.cols}{suffix}"
    if kind in ("amazon", "covtype", "kc_house"):
        return Path("prepared") / kind
    if kind == "mnist":
        return Path("prepared") / ("fashion-mnist" if opts.fashion else "mnist")
    return Path("prepared") / Path(opts.raw or kind).name.split(".")[0]


def _nnz_per_row(opts: PrepareOptions) -> int | None:
    if not opts.sparse:
        if opts.nnz_per_row is not None or opts.density is not None:
            raise ConfigError("--nnz-per-row and --density describe a sparse set; add --sparse")
        return None
    if opts.nnz_per_row is not None and opts.density is not None:
        raise ConfigError("give --nnz-per-row or --density, not both")
    if opts.nnz_per_row is not None:
        return opts.nnz_per_row
    if opts.density is None:
        raise ConfigError("--sparse needs --nnz-per-row K or --density P")
    if not 0 < opts.density <= 1:
        raise ConfigError(f"--density {opts.density} must be in (0, 1]")
    return max(1, int(round(opts.density * (opts.cols or 0))))


def standardized(kind: str, opts: PrepareOptions) -> bool:
    """Whether ``kind`` is standardised: ``--standardize``/``--no-standardize``, else the kind's default.

    ``sklearn`` is standardised by default, so that ``gdcode prepare sklearn --name NAME``
    holds the features ``--dataset sklearn:NAME`` gives (the same rows for the same seed
    and test fraction); every other kind is not.
    """
    if opts.standardize is not None:
        return bool(opts.standardize)
    return kind == "sklearn"


def prepare(kind: str, opts: PrepareOptions, progress=None) -> tuple[Path, dict[str, Any]]:
    """Prepare ``kind`` with ``opts``; return the directory written and its metadata.

    Raises
    ------
    ConfigError
        For every bad option or raw file, naming the problem and the fix.
    """
    from gdcode.data.prepare import common

    check_options(kind, opts)
    if not 0 <= opts.test_fraction < 1:
        raise ConfigError(f"--test-fraction {opts.test_fraction} must be in [0, 1)")
    if opts.task is not None and opts.task not in common.TASKS:
        raise ConfigError(f"--task {opts.task!r} is not one of: {', '.join(common.TASKS)}")
    if kind == "synthetic":
        from gdcode.data.prepare import synthetic

        if opts.rows is None or opts.cols is None:
            raise ConfigError("synthetic needs --rows R and --cols C")
        k = _nnz_per_row(opts)
        out = Path(opts.out) if opts.out else default_out(kind, opts)
        return synthetic.write(out, opts.rows, opts.cols, seed=opts.seed,
                               test_fraction=opts.test_fraction, nnz_per_row=k, force=opts.force,
                               progress=progress)
    out = Path(opts.out) if opts.out else default_out(kind, opts)
    finish: dict[str, Any] = {"kind": kind, "out": out, "test_fraction": opts.test_fraction, "seed": opts.seed,
              "standardize_features": standardized(kind, opts), "force": opts.force}
    if kind == "sklearn":
        from gdcode.data import bundled

        if opts.name is None:
            raise ConfigError(f"sklearn needs --name NAME, one of: {', '.join(bundled.names())}")
        table, natural = bundled.load_table(opts.name)
        task = opts.task or ("binary" if opts.positive is not None else None)
        lab = bundled.labels_for(table, natural, task, opts.positive)
        return common.finish(table, task=lab.task, positive=None, labels=lab,
                             source={"name": opts.name}, **finish)

    if kind == "mnist":
        from gdcode.data.prepare import mnist

        if opts.raw is None:
            raise ConfigError("mnist needs --raw DIR, the directory of the four IDX files")
        return mnist.prepare(Path(opts.raw), out=out, fashion=opts.fashion, dtype=opts.dtype,
                             seed=opts.seed, standardize=standardized(kind, opts), force=opts.force)

    raw = _raw_file(kind, opts)
    source: dict[str, Any] = {"raw": str(raw), "sha256": common.file_digest(raw)}
    if kind in ("amazon", "covtype", "kc_house"):
        from gdcode.data.prepare import download, papers

        source["origin"] = download.SOURCES[kind]["page"]
        if kind == "amazon":
            table, task = papers.amazon(raw), "binary"
        elif kind == "covtype":
            bins = 0 if opts.bins is None else opts.bins
            table, task = papers.covtype(raw, bins), "binary"
            source["bins"] = bins
        else:
            table, task = papers.kc_house(raw, opts.one_hot_all), "regression"
            source["one_hot_all"] = opts.one_hot_all
        return common.finish(table, task=task, positive=None, source=source, **finish)

    from gdcode.data.prepare import readers

    task = opts.task or "binary"
    if kind == "svmlight":
        table = readers.read_svmlight(raw, zero_based=opts.zero_based)
        source["zero_based"] = table.extra["zero_based"]
    elif kind == "csv":
        delimiter = opts.delimiter or ","
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter {delimiter!r} must be one character")
        table = readers.read_csv(raw, opts.label, drop=opts.drop or (), delimiter=delimiter,
                                 label_numeric=task == "regression")
        source["label"] = opts.label
    else:
        table = readers.read_npz(raw)
    return common.finish(table, task=task, positive=opts.positive, source=source, **finish)


def _raw_file(kind: str, opts: PrepareOptions) -> Path:
    if opts.download:
        from gdcode.data.prepare import download

        return download.fetch(kind, opts.raw)
    if opts.raw is None:
        more = " (or --download)" if kind in ("amazon", "covtype", "kc_house") else ""
        raise ConfigError(f"{kind} needs --raw FILE{more}")
    p = Path(opts.raw)
    if not p.exists():
        raise ConfigError(f"cannot read --raw {p}: no such file")
    if p.is_dir():
        raise ConfigError(f"--raw {p} is a directory; give the raw data file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"cannot read --raw {p}: permission denied")
    return p
