"""Machine-tuned parameters of the compiled kernels, cached per machine and kernel build.

The compiled kernels take a few parameters whose best value depends on the machine, not on
the data: how far ahead each dense row stream is prefetched (bytes, for float64 and float32
rows), how far ahead a CSR block's entries are (entries), and up to which size of copy
(KiB) softmax CSR rows go in one fused pass rather than two. They change only how fast a
kernel runs, never what it returns (:func:`gdcode.kernels.linear.set_tuning`).
:mod:`gdcode.kernels.calibrate` measures the distances (well under a second), reads the
copy size off the last-level cache, and stores them here.

Where: one JSON file per machine and kernel build in ``$XDG_CACHE_HOME/gdcode/`` (default
``~/.cache/gdcode/``), named ``kernel-tuning-<digest>.json``, where the digest is that of
the key: the CPU (model name, vendor, family, model, stepping from ``/proc/cpuinfo``), the
number of logical CPUs, the gdcode version and a digest of the compiled extension's file.
A rebuilt extension or another machine sharing the home directory therefore never reads
another's figures. Files are written to a temporary name and renamed into place, so
processes that calibrate at once each leave a whole file and readers never see half of one.

When: importing :mod:`gdcode.kernels` applies the cached parameters if there are any, and
never calibrates (the ranks of an MPI job start together; each calibrating would cost every
rank the time and disturb the others' measurements). Calibration runs where one process per
machine does it, each time only when nothing is cached for this machine and build: in
``make install``, in ``gdcode ec2 setup`` on every host, at the start of
``gdcode bench kernels`` and in the ``gdcode run`` launcher before it starts ``mpiexec``
(which covers the ranks on the launching machine; ranks on other machines need one of the
others there). ``python -m gdcode.kernels.calibrate --force`` measures again. Without a
cached entry the kernels run with the built-in defaults. ``GDCODE_NO_CALIBRATION=1`` uses
the built-in defaults and neither reads nor writes the cache.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path
from types import ModuleType
from typing import Any

from gdcode.cachedir import cache_dir, write_atomic

#: version of the cache file layout
FORMAT = 1
#: environment variable that turns calibration and the cache off when set to a non-empty value
#: other than ``0``
ENV_DISABLE = "GDCODE_NO_CALIBRATION"

#: where the parameters in use came from: "cache", "calibrated", "defaults" or "disabled"
source: str = "defaults"
#: why, in words (for ``gdcode info`` and ``gdcode bench kernels``)
detail: str = "not applied yet"


def disabled() -> bool:
    """True when ``GDCODE_NO_CALIBRATION`` asks for the built-in defaults."""
    return os.environ.get(ENV_DISABLE, "") not in ("", "0")


def cpu_description() -> dict[str, str]:
    """The CPU's identity: model name, vendor, family, model and stepping where known."""
    fields = {"model name": "model", "vendor_id": "vendor", "cpu family": "family",
              "model": "model_number", "stepping": "stepping"}
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                name, _, value = line.partition(":")
                name = name.strip()
                if name in fields:
                    out[fields[name]] = value.strip()
    except OSError:
        pass
    if "model" not in out:  # platform.processor() runs `uname -p` in a subprocess
        out["model"] = platform.processor() or platform.machine() or "unknown"
    return out


def file_digest(path: str | os.PathLike[str] | None) -> str:
    """First 16 hex digits of the SHA-256 of a file (the compiled extension), or "unknown"."""
    if not path:
        return "unknown"
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "unknown"
    return h.hexdigest()[:16]


def machine_key(module: ModuleType) -> dict[str, Any]:
    """The cache key of ``module`` (the compiled ``linear`` extension) on this machine."""
    from gdcode import __version__

    return {"cpu": cpu_description(), "cpus": os.cpu_count() or 0, "gdcode": __version__,
            "kernels": file_digest(getattr(module, "__file__", None))}


def cache_path(key: dict[str, Any]) -> Path:
    """The file that holds the parameters of ``key``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"kernel-tuning-{digest}.json"


def read(key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached entry of ``key``, or None when there is none or it does not fit.

    An entry fits when it parses, has this :data:`FORMAT`, names exactly ``key`` and holds a
    ``params`` dict; the values themselves are checked when applied.
    """
    path = cache_path(key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key
            or not isinstance(entry.get("params"), dict)):
        return None
    return entry


def write(key: dict[str, Any], params: dict[str, int], measured: dict[str, Any] | None = None,
          seconds: float | None = None) -> Path:
    """Store ``params`` for ``key``: written to a temporary file in the cache directory, then
    renamed over the entry (atomic on POSIX), so that concurrent writers and readers each see
    a whole file. Returns the entry's path; OSError when the directory is not writable."""
    path = cache_path(key)
    entry = {"format": FORMAT, "key": key, "params": params, "measured": measured or {},
             "seconds": seconds,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    text = json.dumps(entry, indent=1, sort_keys=True) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
    return path


def _set(src: str, why: str) -> str:
    global source, detail
    source, detail = src, why
    return src


def apply_cached(module: ModuleType | None) -> str:
    """Apply this machine's cached parameters to ``module`` (the compiled ``linear``); return
    :data:`source`. Nothing is measured here: without a fitting entry the module keeps its
    built-in defaults."""
    if module is None:
        return _set("defaults", "the compiled kernels are not built")
    if disabled():
        module.set_tuning(**module.DEFAULT_TUNING)
        return _set("disabled", f"{ENV_DISABLE} is set: built-in defaults")
    key = machine_key(module)
    entry = read(key)
    if entry is None:
        module.set_tuning(**module.DEFAULT_TUNING)
        return _set("defaults", f"nothing calibrated for this machine and build in {cache_dir()}")
    try:
        module.set_tuning(**{**module.DEFAULT_TUNING, **entry["params"]})
    except (TypeError, ValueError) as exc:
        module.set_tuning(**module.DEFAULT_TUNING)
        return _set("defaults", f"ignored {cache_path(key)}: {exc}")
    return _set("cache", f"calibrated {entry.get('created', '?')}, {cache_path(key)}")


def mark_calibrated(path: Path | None, why: str = "") -> None:
    """Record that the parameters in use were just measured (and stored at ``path``)."""
    _set("calibrated", why or (f"measured now, stored in {path}" if path else "measured now"))


def describe(module: ModuleType | None) -> str:
    """One line: the parameters in use and where they came from."""
    if module is None:
        return "none (numpy twins)"
    params = ", ".join(f"{k}={v}" for k, v in module.tuning().items())
    return f"{params} ({source}: {detail})"
