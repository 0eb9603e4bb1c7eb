"""Hostfiles for MPICH (Hydra) and Open MPI.

Formats, one host a line, ``#`` starts a comment in both:

- MPICH (Hydra, ``mpiexec -f FILE``): ``host:N``;
- Open MPI (``mpiexec --hostfile FILE``): ``host slots=N``.

Both launchers fill the hosts in file order, so rank 0, gdcode's coordinator, runs on the first
host: the coordinator's host always comes first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from gdcode.errors import ConfigError

FORMATS = ("mpich", "openmpi")

#: the launcher option that reads a hostfile of each format
LAUNCHER_OPTION = {"mpich": "-f", "openmpi": "--hostfile"}

# a host name or an IPv4 address (hostfiles name hosts, never user@host)
_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_MPICH_LINE = re.compile(r"^(?P<host>[^\s:]+)(?::(?P<slots>\S+))?$")
_OPENMPI_LINE = re.compile(r"^(?P<host>\S+)\s+slots\s*=\s*(?P<slots>\S+)$")


@dataclasses.dataclass(frozen=True)
class Host:
    """One line of a hostfile: an address and how many ranks it runs."""

    address: str
    slots: int = 1


def check_address(address: str, origin: str = "--hosts") -> str:
    """Return ``address`` stripped, or raise :class:`ConfigError` if it cannot name a host.

    Parameters
    ----------
    address : str
        A host name or IPv4 address.
    origin : str
        Where it came from, for the error message.
    """
    address = address.strip()
    if not address:
        raise ConfigError(f"{origin}: an empty host name; give one address per host")
    if not _HOST_RE.match(address):
        raise ConfigError(f"{origin}: {address!r} is not a host name or IPv4 address "
                          "(letters, digits, '.', '-' and '_' only)")
    return address


def _slots(text: str | int, origin: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: slots {text!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{origin}: slots must be at least 1, not {value}")
    return value


def parse_host(entry: str, origin: str) -> tuple[str, int | None]:
    """Read ``host``, ``host:N`` (MPICH) or ``host slots=N`` (Open MPI).

    Parameters
    ----------
    entry : str
        One host entry, without comments.
    origin : str
        Where the entry came from, for error messages.

    Returns
    -------
    (str, int or None)
        The address and the entry's own slot count (None when it gives none).
    """
    entry = entry.strip()
    m = _OPENMPI_LINE.match(entry) or _MPICH_LINE.match(entry)
    if not m:
        raise ConfigError(f"{origin}: cannot read host entry {entry!r}; "
                          "write 'host', 'host:N' or 'host slots=N'")
    slots = None if m.group("slots") is None else _slots(m.group("slots"), origin)
    return check_address(m.group("host"), origin), slots


def make_hosts(addresses: Iterable[str], slots: int = 1, coordinator_slots: int | None = None,
               origin: str = "--hosts") -> list[Host]:
    """The hosts of a hostfile, coordinator first.

    Parameters
    ----------
    addresses : iterable of str
        Host entries in order; the first is the coordinator's host. Each may carry its own slot
        count as ``host:N`` or ``host slots=N``.
    slots : int
        Slots of every host that does not give its own.
    coordinator_slots : int, optional
        Slots of the first host when its entry gives none (default ``slots``).
    origin : str
        Where the addresses came from, for error messages.

    Returns
    -------
    list of Host

    Raises
    ------
    ConfigError
        For no hosts, a repeated host, a bad address or a slot count below 1.
    """
    slots = _slots(slots, "--slots")
    first = slots if coordinator_slots is None else _slots(coordinator_slots, "--coordinator-slots")
    hosts = []
    seen: set[str] = set()
    for i, entry in enumerate(addresses):
        address, own = parse_host(entry, origin)
        if address in seen:
            raise ConfigError(f"{origin}: host {address} is listed twice; list each host once "
                              "and give it more slots instead")
        seen.add(address)
        hosts.append(Host(address, own if own is not None else (first if i == 0 else slots)))
    if not hosts:
        raise ConfigError(f"{origin}: no hosts given; name at least one")
    return hosts


def read_addresses(path: str | Path) -> list[str]:
    """Host entries of a file: one a line, blank lines and ``#`` comments skipped.

    Lines may be plain addresses or lines of either hostfile format, so a hostfile can be
    converted from one format to the other.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--from {p}: no such file; give a file with one address a "
                          "line") from None
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def total_slots(hosts: Sequence[Host]) -> int:
    """Ranks the hosts hold, one per slot."""
    return sum(h.slots for h in hosts)


def launch_line(fmt: str, path: str, hosts: Sequence[Host]) -> str:
    """How to start gdcode with this hostfile on as many ranks as it has slots."""
    n = total_slots(hosts)
    return (f"mpiexec {LAUNCHER_OPTION[fmt]} {path} -n {n} python -m mpi4py -m gdcode run "
            f"--workers {n - 1} ...")


def format_hostfile(hosts: Sequence[Host], fmt: str, path: str = "HOSTFILE",
                    header: bool = True) -> str:
    """The text of a hostfile.

    Parameters
    ----------
    hosts : sequence of Host
        Coordinator's host first.
    fmt : {"mpich", "openmpi"}
        MPICH Hydra (``host:N``) or Open MPI (``host slots=N``).
    path : str
        The file's name as it will be given to ``mpiexec``, for the launch line in the header.
    header : bool
        Start with comment lines stating the format and the launch line.

    Returns
    -------
    str
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not hosts:
        raise ConfigError("a hostfile needs at least one host")
    lines = []
    if header:
        option = LAUNCHER_OPTION[fmt]
        n = total_slots(hosts)
        name = "MPICH (Hydra)" if fmt == "mpich" else "Open MPI"
        lines += [
            f"# {name} hostfile written by gdcode: {len(hosts)} host(s), {n} slot(s); "
            "rank 0 (the coordinator) runs on the first host.",
            f"# launch: {launch_line(fmt, path, hosts)}",
            f"#     or: MPIEXEC_ARGS=\"{option} {path}\" gdcode run --workers {n - 1} ...",
        ]
    for h in hosts:
        lines.append(f"{h.address}:{h.slots}" if fmt == "mpich" else f"{h.address} slots={h.slots}")
    return "\n".join(lines) + "\n"


def write_hostfile(path: str | Path, hosts: Sequence[Host], fmt: str) -> Path:
    """Write a hostfile of format ``fmt`` (with its launch line) and return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(format_hostfile(hosts, fmt, path=str(path)))
    return p
