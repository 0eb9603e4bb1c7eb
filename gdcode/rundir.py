"""Naming, claiming and handing over a run directory (no MPI).

A run directory belongs to one run. The process that starts a run (the ``gdcode run``
launcher, or rank 0 of a job started by hand) *claims* it: it creates the directory (or
finds it empty), takes an exclusive lock on its ``.gdcode.lock`` file for as long as the run
lives, and writes the resolved options to ``options.json``. The ranks of the job read that
file and never parse the command line or a TOML file themselves.

A second run that names the same directory is refused; so is a ``--resume`` of a run whose
lock is still held (it is still running). The lock is an ``flock`` on an open file, so a
process that dies releases it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gdcode.errors import ConfigError, OptionError
from gdcode.options import OPTIONS, RunOptions

OPTIONS_FILE = "options.json"
LOCK_FILE = ".gdcode.lock"
#: files whose presence means the directory already holds a run
RUN_FILES = ("metrics.jsonl", "summary.json", "metadata.json", OPTIONS_FILE)


def check_name(name: str) -> str:
    """``name`` if it is one path component (no separator, not ``.`` or ``..``).

    Raises
    ------
    OptionError
        Naming ``name``.
    """
    if not name or name in (".", "..") or "/" in name or (os.sep != "/" and os.sep in name) or "\0" in name:
        raise OptionError("name", name, "must be a single directory name (no '/', not '.' or '..'); "
                                        "use out for the parent directory")
    return name


def default_name(options: RunOptions, now: datetime.datetime | None = None) -> str:
    """``LABEL-wW-sS-YYYYmmdd-HHMMSS``: the scheme (or mode), workers, stragglers and the time."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{options.label()}-w{options.workers}-s{options.stragglers}-{stamp}"


@dataclass
class Claim:
    """A claimed run directory; the lock lasts until :meth:`release` or the process ends."""

    path: Path
    lock: IO[str] | None

    def release(self) -> None:
        """Give up the lock (the directory and its files stay)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def _lock(path: Path) -> IO[str] | None:
    """An exclusive, non-blocking lock on ``path/.gdcode.lock``; None when another process holds it."""
    fh = (path / LOCK_FILE).open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def is_running(path: str | os.PathLike) -> bool:
    """Whether a live process holds the run directory's lock."""
    p = Path(path)
    if not (p / LOCK_FILE).exists():
        return False
    lock = _lock(p)
    if lock is None:
        return True
    lock.close()
    return False


def claim_new(options: RunOptions) -> tuple[Claim, RunOptions]:
    """Claim ``out/name`` (or a new default name) for a new run; the options with ``name`` set.

    A default name gets ``-2``, ``-3``... when taken, so that runs started in the same second
    get different directories. Creating the directory is atomic, so two runs never share one.

    Raises
    ------
    ConfigError
        When the named directory already holds a run or another process has claimed it.
    """
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if options.name is not None:
        path = out / check_name(options.name)
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise ConfigError(f"the run directory {path} exists and is not a directory; choose another "
                                  "--name or --out") from None
            taken = [f for f in RUN_FILES if (path / f).exists()]
            if taken:
                raise ConfigError(f"the run directory {path} already holds a run ({taken[0]}); choose another "
                                  "--name or --out (nothing was overwritten)") from None
        lock = _lock(path)
        if lock is None or any((path / f).exists() for f in RUN_FILES):
            if lock is not None:
                lock.close()
            raise ConfigError(f"the run directory {path} is being used by another run; choose another --name "
                              "or --out (nothing was overwritten)")
        return Claim(path, lock), options
    base = default_name(options)
    for k in range(1, 10_000):
        name = base if k == 1 else f"{base}-{k}"
        try:
            (out / name).mkdir()
        except FileExistsError:
            continue
        lock = _lock(out / name)
        if lock is not None:
            return Claim(out / name, lock), options.replace(name=name)
    raise ConfigError(f"no free run directory name under {out} starting {base}; give --name")


def claim_resume(path: str | os.PathLike) -> Claim:
    """Claim an existing run directory to continue it.

    Raises
    ------
    ConfigError
        When it is not a run directory or its run is still going.
    """
    p = Path(path)
    if not p.is_dir():
        raise OptionError("resume", str(path), "is not a run directory (it does not exist)")
    lock = _lock(p)
    if lock is None:
        raise OptionError("resume", str(path), "is still running (another process holds its lock); wait for it "
                                               "to end or stop it first")
    return Claim(p, lock)


#: files a resumed run replaces, set aside as ``NAME.stale.EXT`` when it starts
STALE_ON_RESUME = ("summary.json", "model.npy")


def mark_stale(path: str | os.PathLike) -> None:
    """Set the old ``summary.json`` and ``model.npy`` aside as stale: the resumed run writes new ones."""
    for name in STALE_ON_RESUME:
        f = Path(path) / name
        if f.exists():
            os.replace(f, f.with_name(f"{f.stem}.stale{f.suffix}"))


def write_options(path: str | os.PathLike, options: RunOptions, command: Sequence[str] = ()) -> None:
    """Write the resolved options and the command that gave them to ``path/options.json`` (atomically)."""
    target = Path(path) / OPTIONS_FILE
    tmp = target.with_name(f".{OPTIONS_FILE}.{os.getpid()}.tmp")
    record = {"options": options.to_dict(), "command": list(command), "written_at": time.time()}
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, target)


def read_command(path: str | os.PathLike) -> list[str]:
    """The command line that started the run in ``path`` (as ``options.json`` records it)."""
    try:
        return list(json.loads((Path(path) / OPTIONS_FILE).read_text()).get("command", []))
    except (OSError, json.JSONDecodeError):
        return []


def read_options(path: str | os.PathLike) -> RunOptions:
    """The resolved options of a run directory: ``options.json``, else ``metadata.json``'s options.

    Raises
    ------
    ConfigError
        When neither file is there or readable.
    """
    p = Path(path)
    for name, key in ((OPTIONS_FILE, "options"), ("metadata.json", "options")):
        f = p / name
        if not f.exists():
            continue
        try:
            data: Any = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{f} cannot be read ({exc})") from None
        values = data.get(key, {})
        known = {spec.dest for spec in OPTIONS}
        return RunOptions.from_dict({k: v for k, v in values.items() if k in known}, origin=str(f))
    raise ConfigError(f"{p} is not a gdcode run directory (no {OPTIONS_FILE} or metadata.json)")


def resume_options(path: str | os.PathLike, changes: dict[str, Any]) -> RunOptions:
    """The options to continue the run in ``path``: its own, with the few ``changes`` a resume allows.

    Raises
    ------
    ConfigError
        When ``changes`` names an option a resume cannot change, or the checkpoint is at or past
        the iterations asked for.
    """
    from gdcode import checkpoint

    allowed = [spec.dest for spec in OPTIONS if spec.resumable and spec.dest != "resume"]
    bad = sorted(k for k in changes if k not in allowed and k != "resume")
    if bad:
        flags = " ".join("--" + b.replace("_", "-") for b in bad)
        may = ", ".join("--" + a.replace("_", "-") for a in allowed)
        raise ConfigError(f"--resume continues a run with its own options; {flags} cannot be given (only {may} may)")
    p = Path(path)
    stored = read_options(p)
    options = stored.replace(**{k: v for k, v in changes.items() if k != "resume"},
                             resume=str(p), out=str(p.parent), name=p.name)
    state = checkpoint.load(p)
    if options.iterations <= state["iteration"]:
        raise OptionError("iterations", options.iterations, f"must be above the checkpoint's iteration "
                                                            f"{state['iteration']} to resume {p}")
    return options
