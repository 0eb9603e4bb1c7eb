"""The run directory: writer and reader (the files are described in ``docs/run-directory.md``).

:func:`load_run` reads one run directory; :func:`load_runs` reads many (run directories, or
folders of them such as an experiment's ``runs/``) into pandas DataFrames for analysis.

``OUT/NAME/`` holds ``options.json``, ``metadata.json``, ``metrics.jsonl`` (one JSON object per
line, appended and flushed as the run goes), ``workers.csv``, ``summary.json`` and
``model.npy``. Whole files (JSON documents, the model) are written to a temporary file and
renamed, so a reader sees the old file or the new one, never a part; the appended files are
read up to their last complete line. A write that fails (a full disk) raises
:class:`RunDirError` naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

WORKER_STATUSES = ("used", "ignored", "cancelled", "late", "dead")
WORKERS_HEADER = ("iteration", "worker", "arrival", "status")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value


class RunDirError(OSError):
    """A file of the run directory could not be written (e.g. the disk is full)."""


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike, write: Any) -> None:
    """Write ``path`` through ``write(file_object)`` into a temporary file, then rename it over ``path``.

    Raises
    ------
    RunDirError
        When writing fails; the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON in ``path``, written atomically (:func:`write_atomic`)."""
    text = (json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n").encode()
    write_atomic(path, lambda fh: fh.write(text))


class RunWriter:
    """Writes one run directory; only the coordinating rank holds one.

    Parameters
    ----------
    path : path-like
        The run directory; created if missing.
    append : bool
        Continue existing metrics and workers files (a resumed run) instead of starting them.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            mode = "a" if append else "w"
            self._metrics = (self.path / "metrics.jsonl").open(mode, buffering=1)
            workers_path = self.path / "workers.csv"
            fresh = not append or not workers_path.exists()
            self._workers_fh = workers_path.open("w" if fresh else "a", newline="", buffering=1)
            self._workers = csv.writer(self._workers_fh)
            if fresh:
                self._workers.writerow(WORKERS_HEADER)
                self._workers_fh.flush()
        except OSError as exc:
            raise RunDirError(exc.errno, f"cannot write the run directory {self.path}: {exc.strerror}") from None

    def write_metadata(self, metadata: dict) -> None:
        write_json(self.path / "metadata.json", metadata)

    def append_metrics(self, record: dict) -> None:
        """Append one iteration's record as one complete line, flushed at once."""
        self._append(self._metrics, json.dumps(_jsonable(record)) + "\n")

    def append_workers(self, rows: list[tuple[int, int, float | None, str]]) -> None:
        """Rows of ``(iteration, worker, arrival seconds or None, status)``."""
        if not rows:
            return
        out = io.StringIO()
        writer = csv.writer(out)
        for it, worker, arrival, status in rows:
            assert status in WORKER_STATUSES, status
            writer.writerow((it, worker, "" if arrival is None else f"{arrival:.6f}", status))
        self._append(self._workers_fh, out.getvalue())

    def _append(self, fh: IO[str], text: str) -> None:
        try:
            fh.write(text)
            fh.flush()
        except OSError as exc:
            raise RunDirError(exc.errno, f"cannot write {fh.name}: {exc.strerror}") from None

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)

    def save_model(self, params: np.ndarray) -> None:
        write_atomic(self.path / "model.npy", lambda fh: np.save(fh, params))

    def close(self) -> None:
        for fh in (self._metrics, self._workers_fh):
            try:
                fh.close()
            except OSError:  # a full disk: what was flushed is there, the rest is lost
                pass


@dataclass
class Run:
    """A run directory read back: what plots, notebooks and tests use.

    ``options`` are the run's resolved options (``metadata.json``'s, else ``options.json``'s:
    a run killed before it began has only the latter).
    """

    path: Path
    metadata: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    summary: dict | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.options:
            self.options = dict(self.metadata.get("options") or {})

    def column(self, key: str) -> np.ndarray:
        """One metrics key over the iterations (NaN where a line lacks it)."""
        return np.array([m.get(key, np.nan) if m.get(key) is not None else np.nan for m in self.metrics],
                        dtype=float)

    @property
    def model(self) -> np.ndarray:
        return np.load(self.path / "model.npy")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Every complete line of ``metrics.jsonl``; a torn last line (a killed run) is skipped."""
    out = []
    with Path(path).open() as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            out.append(json.loads(line))
    return out


def read_workers(path: str | os.PathLike) -> list[dict]:
    """Rows of ``workers.csv`` with ``iteration``/``worker`` as int and ``arrival`` as float or None.

    A torn last line (a killed run, a full disk) is skipped.
    """
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for r in rows:
        r["iteration"] = int(r["iteration"])
        r["worker"] = int(r["worker"])
        r["arrival"] = float(r["arrival"]) if r["arrival"] else None
    return rows


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory; files that a killed run did not write are left empty."""
    p = Path(path)
    if not (p / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{p} is not a gdcode run directory (no metrics.jsonl)")
    run = Run(path=p, metrics=read_metrics(p / "metrics.jsonl"))
    if (p / "metadata.json").exists():
        run.metadata = json.loads((p / "metadata.json").read_text())
    if (p / "workers.csv").exists():
        run.workers = read_workers(p / "workers.csv")
    if (p / "summary.json").exists():
        run.summary = json.loads((p / "summary.json").read_text())
    run.options = dict(run.metadata.get("options") or {})
    if not run.options and (p / "options.json").exists():
        try:
            run.options = dict(json.loads((p / "options.json").read_text()).get("options") or {})
        except ValueError:  # a torn handoff file: the run has no options to report
            pass
    return run


# ----------------------------------------------------------------------------- many runs

#: options that name, place or guard a run without changing what it computes; they never tell
#: runs apart (in :func:`differing_options`, :func:`seed_groups` and :func:`load_runs`)
BOOKKEEPING_OPTIONS = ("out", "name", "timeout", "checkpoint_every", "resume", "record_delays", "quiet")

#: options that tell runs apart in a legend, beyond the scheme, S and collect (:func:`run_labels`)
KEY_OPTIONS = (("workers", "W={}"), ("delay", "delay {}"), ("delay_scale_with_load", "load-scaled={}"),
               ("update", "{}"), ("lr", "lr={}"), ("dataset", "{}"), ("model", "{}"), ("seed", "seed={}"))


def find_run_dirs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The run directories named by ``paths``.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Run directories (holding ``metrics.jsonl``), or folders searched for them at any depth
        (hidden folders skipped), such as an experiment's ``runs/`` or its whole output.

    Returns
    -------
    list of Path
        In the order given; a folder's runs sorted by path; each directory once.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist, or a folder that holds no run directory.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if (p / "metrics.jsonl").is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p} does not exist; give run directories (OUT/NAME, holding metrics.jsonl) "
                                    "or folders of them")
        inner = []
        for root, dirs, files in os.walk(p):
            if "metrics.jsonl" in files:
                inner.append(Path(root))
                dirs[:] = []
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not inner:
            raise FileNotFoundError(f"{p} is not a gdcode run directory (no metrics.jsonl) and holds none")
        found.extend(sorted(inner))
    seen: set[Path] = set()
    unique = []
    for d in found:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _same(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, default=str)


def differing_options(runs: Sequence[Run], ignore: Iterable[str] = BOOKKEEPING_OPTIONS) -> list[str]:
    """The options whose values are not the same in every run (an option a run lacks counts as
    None), in the order of the runs' options; the ``ignore`` ones left out."""
    skip = set(ignore)
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(k for k in r.options if k not in skip))
    return [k for k in keys if len({_same(r.options.get(k)) for r in runs}) > 1]


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs grouped by everything but their seed: runs that differ only in ``seed`` (and in
    :data:`BOOKKEEPING_OPTIONS`) are one group. Groups in the order of their first run."""
    groups: dict[str, list[Run]] = {}
    skip = set(BOOKKEEPING_OPTIONS) | {"seed"}
    for r in runs:
        key = _same({k: v for k, v in r.options.items() if k not in skip})
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def run_label(run: Run) -> str:
    """Legend text: the scheme (or mode) and its key options."""
    opts = run.options
    mode = opts.get("mode", "coded")
    label = str(opts.get("scheme", "?") if mode == "coded" else mode)
    if opts.get("stragglers"):
        label += f" S={opts['stragglers']}"
    if opts.get("collect"):
        label += f" collect={opts['collect']}"
    return label


def run_labels(runs: Sequence[Run], ignore: Iterable[str] = ()) -> list[str]:
    """One legend entry per run: :func:`run_label` plus every key option that differs between
    the runs (except those in ``ignore``); the run directory's name if two entries would still
    be the same."""
    skip = set(ignore)
    labels = [run_label(r) for r in runs]
    opts = [r.options for r in runs]
    for key, fmt in KEY_OPTIONS:
        if key in skip:
            continue
        vals = [o.get(key) for o in opts]
        if len({repr(v) for v in vals}) > 1:
            labels = [f"{lab}, {fmt.format(v)}" for lab, v in zip(labels, vals, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({r.path.name})" for lab, r in zip(labels, runs, strict=True)]
    return labels


def _run_ids(dirs: Sequence[Path]) -> list[str]:
    """Each run's id: its directory name, or its path below the runs' common folder when two
    runs share a name."""
    names = [d.name for d in dirs]
    if len(set(names)) == len(names):
        return names
    resolved = [d.resolve() for d in dirs]
    base = Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0].parent
    return [r.relative_to(base).as_posix() if r != base else r.name for r in resolved]


def _number(value: Any) -> Any:
    """A metrics or summary value with the non-finite markers of the files turned back into floats."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def _cell(value: Any) -> Any:
    """An option's value as a DataFrame cell: lists and dicts as JSON text, so cells compare and group."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _flatten_line(line: dict) -> dict:
    """A metrics line with each dict of counts (``bytes_sent``: bytes by message kind) as its total
    plus one ``KEY_KIND`` entry per kind."""
    out: dict[str, Any] = {}
    for key, value in line.items():
        if isinstance(value, dict):
            out[key] = float(sum(v for v in value.values() if isinstance(v, (int, float))))
            for kind, v in value.items():
                out[f"{key}_{kind}"] = _number(v)
        elif isinstance(value, list):
            out[key] = json.dumps(value)
        else:
            out[key] = _number(value)
    return out


def _summary_scalars(summary: dict | None, option_names: Iterable[str]) -> dict:
    """The summary's scalar entries; ``bytes`` as totals over the ranks; per-worker lists left out.

    A key that is also an option's name (``iterations``: the option asks for them, the
    summary says how many ran) is prefixed ``summary_``.
    """
    if not summary:
        return {"status": "unfinished"}
    from gdcode.options import OPTION_BY_DEST

    clash = set(option_names) | set(OPTION_BY_DEST)
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"summary_{key}" if key in clash else key
        if key == "bytes" and isinstance(value, dict):
            for direction in ("sent", "received"):
                per_rank = value.get(direction)
                if isinstance(per_rank, list):
                    out[f"bytes_{direction}"] = float(sum(v for v in per_rank if isinstance(v, (int, float))))
                for kind, counts in (value.get("by_kind", {}).get(direction) or {}).items():
                    if isinstance(counts, list):
                        out[f"bytes_{direction}_{kind}"] = float(sum(counts))
        elif not isinstance(value, (list, dict)):
            out[name] = _number(value)
    return out


@dataclass(frozen=True)
class RunTables:
    """Runs read into pandas DataFrames by :func:`load_runs`.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per run, indexed by ``run`` (the directory's name, or its path below the
        runs' common folder when names repeat): ``label`` (legend text), ``path``, the
        options that differ between the runs, then the summary's scalars (``status``,
        ``iterations`` as ``summary_iterations``, ``elapsed``, ``train_loss``, ``test_*``,
        CPU seconds, ``bytes_sent``/``bytes_received`` totals over the ranks and per message
        kind, ...). A run without ``summary.json`` (killed, or still going) has status
        ``unfinished``.
    metrics : pandas.DataFrame
        One row per ``metrics.jsonl`` line: ``run``, ``label``, the differing options, then
        the line's keys; the dicts of bytes by message kind become a total column
        (``bytes_sent``) plus one column per kind (``bytes_sent_model``, ...).
    workers : pandas.DataFrame
        One row per ``workers.csv`` row: ``run``, ``label``, the differing options,
        ``iteration``, ``worker``, ``arrival`` (NaN when no reply came), ``status``.
    options : list of str
        The options that differ between the runs (the option columns above), in option order.
    loaded : list of Run
        The runs themselves (per-worker summary lists, metadata, models), in row order.
    """

    runs: pd.DataFrame
    metrics: pd.DataFrame
    workers: pd.DataFrame
    options: list[str]
    loaded: list[Run]


def _pandas():
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("gdcode.results.load_runs needs pandas, which is not installed; install the "
                          "analysis extra: pip install 'gdcode[analysis]'") from exc
    return pd


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> RunTables:
    """Read runs into pandas DataFrames: one of runs, one of metrics lines, one of worker replies.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Run directories, or folders holding them at any depth (an experiment's ``runs/``);
        see :func:`find_run_dirs`.

    Returns
    -------
    RunTables
        ``runs``, ``metrics``, ``workers`` and the names of the options that differ between
        the runs, which are columns of all three frames (group by them; ``seed`` among them
        when the runs were repeated over seeds).

    Raises
    ------
    ImportError
        When pandas is missing, naming the extra to install (``gdcode[analysis]``).
    FileNotFoundError
        When a path is neither a run directory nor a folder holding one.

    Examples
    --------
    >>> t = load_runs("experiment-results/erasurehead/runs")  # doctest: +SKIP
    >>> t.metrics.groupby("run")["train_loss"].last()  # doctest: +SKIP
    """
    pd = _pandas()
    dirs = find_run_dirs(paths)
    loaded = [load_run(d) for d in dirs]
    ids = _run_ids(dirs)
    varying = differing_options(loaded)
    labels = run_labels(loaded)
    rows, metric_frames, worker_frames = [], [], []
    for run, rid, label in zip(loaded, ids, labels, strict=True):
        opts = {k: _cell(run.options.get(k)) for k in varying}
        rows.append({"run": rid, "label": label, "path": str(run.path), **opts,
                     **_summary_scalars(run.summary, run.options or varying)})
        m = pd.DataFrame([_flatten_line(line) for line in run.metrics])
        for key in {k for line in run.metrics for k, v in line.items() if isinstance(v, dict)}:
            kinds = [c for c in m.columns if c.startswith(f"{key}_")]
            has = m[key].notna()
            m.loc[has, kinds] = m.loc[has, kinds].fillna(0.0)  # a kind left out of a line sent nothing
        metric_frames.append(m.assign(**{"run": rid, "label": label, **opts}))
        w = pd.DataFrame(run.workers, columns=list(WORKERS_HEADER))
        worker_frames.append(w.assign(**{"run": rid, "label": label, **opts}))
    lead = ["run", "label", *varying]
    runs = pd.DataFrame(rows).set_index("run")
    metrics = pd.concat(metric_frames, ignore_index=True)
    metrics = metrics[lead + [c for c in metrics.columns if c not in lead]]
    workers = pd.concat(worker_frames, ignore_index=True)
    workers = workers[lead + list(WORKERS_HEADER)]
    workers["arrival"] = workers["arrival"].astype(float)
    return RunTables(runs=runs, metrics=metrics, workers=workers, options=varying, loaded=loaded)
