"""Clusters emulated on one machine: network namespaces on a bridge, shaped links, an optional latency.

``gdcode cluster up NAME --hosts N`` (:func:`up`) makes N emulated hosts; ``gdcode run --cluster
NAME`` (:func:`launch_spec`) runs the coordinator on host 0 and the workers on hosts 1..N-1; ``gdcode
cluster down NAME`` (:func:`down`) removes them. It needs root, the kernel's network namespaces and
iproute2 (``ip``, ``tc``); nothing here imports MPI.

What ``up`` makes, every object named with the prefix ``gdc-NAME-`` (interface names are limited
to 15 characters, so NAME has at most 7 letters or digits):

- a bridge ``gdc-NAME-br`` in the root namespace with the address ``x.y.z.254`` of a private /24
  that no existing route or address overlaps (``10.213.*.0/24`` first);
- per host I: a network namespace ``gdc-NAME-hI`` (``lo`` up), a veth pair whose end
  ``gdc-NAME-vI`` is on the bridge and whose end ``gdc-NAME-eth`` is inside the namespace with the
  address ``x.y.z.(I+1)`` (the same name on every host, like ``eth0``: ``FI_TCP_IFACE`` names it);
- ``--bandwidth RATE``: ``tbf rate RATE burst B latency 100ms`` on both ends of every veth
  (tbf shapes what an interface sends, so one end shapes the host's uplink and the other its
  downlink; B is 64 KiB, or 4 ms of the rate when that is more);
- ``--latency SECONDS``, the one-way delay between two hosts: with ``netem`` (detected by adding
  one to the namespace's ``lo``), a ``netem delay`` on the host's end of its veth (the root
  qdisc, with the tbf under it when there is one), so each packet is delayed once, by its
  sender. Without ``netem`` (this machine kind's kernel), a TUN device ``gdc-NAME-tun`` in
  every namespace with a second address
  ``x.y.z.(101+I)``, a route to every other host's TUN address through it, and the relay process
  (:mod:`gdcode.cluster.relay`) that forwards the packets between the TUNs after the delay. The
  TUN addresses are the data plane (MPI's traffic, see :func:`net_env`); the veths stay the
  control plane (hydra's proxies talk to mpiexec at the bridge's address). MPI's traffic then
  bypasses the veths, so the relay applies the rate as well: a token bucket per link and
  direction, like tbf's (the veths keep their tbf).

The state of a cluster is ``$GDCODE_CLUSTER_DIR/NAME.json`` (default ``/run/gdcode/clusters``,
on tmpfs, so it goes at a reboot as the namespaces do), written before anything is created and
after every object; ``$GDCODE_CLUSTER_DIR/NAME/`` holds the hydra launcher, a hostfile, the
relay's configuration, log and counters. ``down`` removes what the state file lists, then sweeps
every namespace and link whose name is ``gdc-NAME-`` followed by one of the suffixes above, and
any relay process running this cluster's configuration, so it also cleans up after a crash.

``up`` is transactional: an error, SIGINT or SIGTERM while it works removes everything it made
and re-raises (SIGTERM as :class:`Interrupted`). ``GDCODE_CLUSTER_STEP_DELAY=SECONDS`` makes it
pause after every object it creates (the tests' way to interrupt it half-way).

Ranks reach the namespaces through hydra's ssh launcher: ``mpiexec -launcher ssh -launcher-exec
STATE/NAME/launcher -localhost BRIDGE_ADDRESS -hosts gdc-NAME-h0:1,...``; hydra calls the launcher
as ``launcher [ssh options] HOST COMMAND...``, and it runs ``ip netns exec HOST sh -c "exec
COMMAND"``. The launcher is a shell script generated at ``up`` (it names the cluster's ``ip`` and
refuses hosts of other clusters). MPICH's OFI netmod with libfabric's tcp provider
(:func:`net_env`) carries the traffic between hosts over TCP sockets on the data plane's
interfaces (``FI_TCP_IFACE``); the default UCX netmod would find the namespaces on one machine
and use shared memory between them. Ranks on one host share memory (MPICH's own, by hydra's
host names), as on a real machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gdcode.cluster import ClusterError
from gdcode.errors import ConfigError
from gdcode.procfs import process_alive

#: the variable naming the directory of the clusters' state files
STATE_ENV = "GDCODE_CLUSTER_DIR"
DEFAULT_STATE_DIR = Path("/run/gdcode/clusters")
#: test hook: seconds ``up`` pauses after each object it creates
STEP_DELAY_ENV = "GDCODE_CLUSTER_STEP_DELAY"
#: the kernel's limit on an interface name
IFNAMSIZ = 15
#: hosts per cluster (host numbers have at most two digits: names stay within 15 characters)
MAX_HOSTS = 99
#: what every object's name starts with, before the cluster's name
PREFIX = "gdc-"
#: the longest suffix after the prefix (``v99``)
LONGEST_SUFFIX = 3
MAX_NAME = IFNAMSIZ - len(PREFIX) - 1 - LONGEST_SUFFIX
#: tbf's bucket and its queue limit (as ``latency``)
MIN_BURST = 64 * 1024
QUEUE_LIMIT = 0.1
#: the environment that puts MPICH's traffic between hosts on TCP sockets: the OFI netmod with
#: libfabric's tcp provider. (The wheel's default netmod, UCX, needs ``UCX_TLS=self,tcp`` to leave
#: shared memory between namespaces, and then, measured, loses the first messages between two
#: workers now and then: a gossip run hung in 3 of 4 tries, never with OFI in 12.)
NET_ENV = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
#: the TUNs' MTU: jumbo frames, as on a cluster's network; the relay's cost is per packet (measured on
#: 2 vCPUs under load: ~70 MB/s through the relay at MTU 1500, ~290 MB/s at 9000)
TUN_MTU = 9000
#: a host's TUN address is ``x.y.z.(TUN_HOST_BASE + I)`` (its veth's is ``x.y.z.(I + 1)``)
TUN_HOST_BASE = 101
#: seconds ``up`` waits for the relay to attach to its TUNs, and ``down`` for things to go
RELAY_START_TIMEOUT = 10.0
GONE_TIMEOUT = 5.0

_NAME_RE = re.compile(r"^[a-z0-9]+$")
_RATE_RE = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>[a-z]*)$")
#: tc's rate units (tc(8) "RATES"): bits per second for ``bit`` and a bare number, bytes for ``bps``
_RATE_UNITS = {"": 1 / 8, "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
               "kibit": 1024 / 8, "mibit": 1024**2 / 8, "gibit": 1024**3 / 8, "tibit": 1024**4 / 8,
               "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "tbps": 1e12,
               "kibps": 1024.0, "mibps": 1024.0**2, "gibps": 1024.0**3, "tibps": 1024.0**4}
LATENCY_METHODS = ("auto", "netem", "relay")


class Unavailable(ConfigError):
    """This machine cannot emulate a cluster (not root, no ``ip``, no namespaces): exit 2."""


class Interrupted(BaseException):
    """SIGTERM arrived while :func:`up` worked (it removed what it had made)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclasses.dataclass(frozen=True)
class Host:
    """One emulated host: its namespace, its veth pair, its address, its TUN and its address there (relay only)."""

    index: int
    namespace: str
    veth: str  # the end on the bridge, in the root namespace
    peer: str  # the end inside the namespace
    address: str
    tun: str | None = None
    tun_address: str | None = None  # the host's data-plane address on its TUN (relay only)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """An emulated cluster as its state file records it."""

    name: str
    hosts: tuple[Host, ...]
    slots: int
    subnet: str
    bridge: str
    bridge_address: str
    bandwidth: str | None = None
    latency: float | None = None
    latency_method: str | None = None  # "netem" or "relay" when latency is set
    relay_pid: int | None = None
    status: str = "up"  # "creating" until up finished
    created: str = ""
    objects: tuple[tuple[str, str], ...] = ()  # ("netns" | "link" | "tun" | "process", name), in order made
    state_dir: str = ""

    @property
    def prefix(self) -> str:
        """What every object's name starts with."""
        return prefix(self.name)

    @property
    def directory(self) -> Path:
        """The cluster's files: the launcher, the hostfile, the relay's configuration and log."""
        return Path(self.state_dir) / self.name

    @property
    def launcher(self) -> Path:
        """hydra's ``-launcher-exec``."""
        return self.directory / "launcher"

    @property
    def hostfile(self) -> Path:
        """A hydra hostfile of every slot: host 0 with one (the coordinator), the others ``slots`` each."""
        return self.directory / "hostfile"

    @property
    def max_workers(self) -> int:
        """Workers ``gdcode run --cluster`` can place: ``slots`` on each host but host 0."""
        return (len(self.hosts) - 1) * self.slots

    def to_dict(self) -> dict[str, Any]:
        """The state file's contents."""
        out = dataclasses.asdict(self)
        out["hosts"] = [dataclasses.asdict(h) for h in self.hosts]
        out["objects"] = [list(o) for o in self.objects]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cluster:
        """A cluster from its state file's contents."""
        values = dict(data)
        values["hosts"] = tuple(Host(**h) for h in values.get("hosts", ()))
        values["objects"] = tuple((str(k), str(n)) for k, n in values.get("objects", ()))
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """What ``mpiexec`` needs to start a job on an emulated cluster.

    Attributes
    ----------
    cluster : str
        The cluster's name.
    mpiexec_args : tuple of str
        hydra's options: the launcher, ``-localhost`` and ``-hosts`` with the placement.
    env : dict
        Variables for the job (:func:`net_env`: TCP between hosts, never shared memory).
    placement : tuple of (str, int)
        Each host used (namespace) and the ranks it runs, in rank order: host 0 runs rank 0 alone.
    """

    cluster: str
    mpiexec_args: tuple[str, ...]
    env: Mapping[str, str]
    placement: tuple[tuple[str, int], ...]


# ----------------------------------------------------------------------------- names, values, checks


def check_name(name: str) -> str:
    """Return ``name`` if it can name a cluster, else raise :class:`ConfigError` saying why.

    A name is 1 to :data:`MAX_NAME` lowercase letters or digits: it goes into interface names of
    at most 15 characters (``gdc-NAME-v99``), and without dashes no cluster's prefix is another's.
    """
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"cluster name {name!r}: use lowercase letters and digits only (it names network "
                          f"interfaces, as {PREFIX}NAME-br)")
    if len(name) > MAX_NAME:
        raise ConfigError(f"cluster name {name!r} is too long: interface names are limited to {IFNAMSIZ} "
                          f"characters ({PREFIX}{name}-v99 has {len(PREFIX) + len(name) + 1 + LONGEST_SUFFIX}), "
                          f"so a name has at most {MAX_NAME}")
    return name


def prefix(name: str) -> str:
    """``gdc-NAME-``: the start of every object's name of cluster ``name``."""
    return f"{PREFIX}{check_name(name)}-"


def _object_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix(name))}(br|eth|tun|[hv][0-9]{{1,2}})$")


def parse_rate(text: str, flag: str = "--bandwidth") -> float:
    """Bytes per second of a rate in tc's notation (``100mbit``, ``1gbit``, ``12mbps``; a bare number is bit/s).

    The one parser of rates: ``gdcode cluster up --bandwidth`` and the simulator's ``--network``
    (``flag`` names the option in the error).

    Raises
    ------
    ConfigError
        When ``text`` is not a positive rate.
    """
    m = _RATE_RE.match(str(text).strip().lower())
    if not m or m.group("unit") not in _RATE_UNITS:
        raise ConfigError(f"{flag} {text}: not a rate in tc's notation; write e.g. 100mbit, 1gbit or 500kbit "
                          "(bit: bits per second, bps: bytes per second)")
    value = float(m.group("number")) * _RATE_UNITS[m.group("unit")]
    if not value > 0:
        raise ConfigError(f"{flag} {text}: must be more than 0")
    return value


def burst_bytes(rate: float) -> int:
    """The tbf bucket for a rate of ``rate`` bytes/s: 64 KiB, or 4 ms of the rate when that is more."""
    return max(MIN_BURST, int(rate * 0.004))


def state_dir() -> Path:
    """Where the clusters' state files are: ``$GDCODE_CLUSTER_DIR``, else ``/run/gdcode/clusters``."""
    env = os.environ.get(STATE_ENV)
    return Path(env) if env else DEFAULT_STATE_DIR


def check_environment() -> None:
    """Raise :class:`Unavailable` (one line: the problem and the fix) unless clusters can be made here."""
    if os.geteuid() != 0:
        raise Unavailable("emulating a cluster needs root (network namespaces, veth pairs and tc need "
                          "CAP_SYS_ADMIN and CAP_NET_ADMIN): run it as root, e.g. sudo .venv/bin/gdcode cluster ...")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise Unavailable(f"emulating a cluster needs iproute2's `{tool}`, which is not on PATH: install "
                              "iproute2 (apt-get install iproute2)")
    if not Path("/proc/self/ns/net").exists():
        raise Unavailable("this kernel has no network namespaces (CONFIG_NET_NS): use a Linux kernel that has them")


# ----------------------------------------------------------------------------- commands


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run one ``ip``/``tc`` command; :class:`ClusterError` with its message when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise ClusterError(f"`{' '.join(argv)}` failed: {message[-1] if message else f'exit {proc.returncode}'}")
    return proc


def _json(argv: list[str]) -> Any:
    out = _run(argv).stdout.strip()
    return json.loads(out) if out else []


def namespaces() -> list[str]:
    """The names of every network namespace ``ip netns`` knows."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links(namespace: str | None = None) -> list[str]:
    """The names of the interfaces of the root namespace (or of ``namespace``)."""
    argv = ["ip", "-j", "link", "show"] if namespace is None else ["ip", "-n", namespace, "-j", "link", "show"]
    return [entry["ifname"] for entry in _json(argv)]


def shaping_commands(interface: str, rate: float | None, latency: float | None,
                     namespace: str | None = None) -> list[list[str]]:
    """The ``tc`` commands that shape one veth end (empty without rate and latency).

    Parameters
    ----------
    interface : str
        The veth end.
    rate : float, optional
        Bytes per second: a ``tbf`` (``burst_bytes(rate)``, ``latency 100ms``), the root qdisc or,
        with ``latency``, under the netem.
    latency : float, optional
        Seconds of ``netem delay`` (the host's own end only): the root qdisc, with the tbf under it
        (``parent 1:1``) when there is one.
    namespace : str, optional
        The namespace the interface is in (``tc -n NS``).

    Returns
    -------
    list of list of str
    """
    tc = ["tc"] if namespace is None else ["tc", "-n", namespace]
    out = []
    if latency:
        out.append([*tc, "qdisc", "add", "dev", interface, "root", "handle", "1:", "netem", "delay",
                    f"{latency * 1e6:.0f}us", "limit", "100000"])
    if rate:
        parent = ["parent", "1:1", "handle", "10:"] if latency else ["root", "handle", "1:"]
        out.append([*tc, "qdisc", "add", "dev", interface, *parent, "tbf", "rate", f"{rate * 8:.0f}bit",
                    "burst", str(burst_bytes(rate)), "latency", f"{QUEUE_LIMIT * 1000:.0f}ms"])
    return out


def netem_available(namespace: str) -> bool:
    """Whether the kernel has ``netem`` (tried on ``lo`` of ``namespace``, then removed)."""
    proc = _run(["tc", "-n", namespace, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], check=False)
    if proc.returncode == 0:
        _run(["tc", "-n", namespace, "qdisc", "del", "dev", "lo", "root"], check=False)
        return True
    if "unknown" in proc.stderr.lower():  # "Specified qdisc kind is unknown."
        return False
    raise ClusterError(f"cannot tell whether the kernel has netem: {proc.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for entry in _json(["ip", "-4", "-j", "route", "show", "table", "all"]):
        dst = entry.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    for entry in _json(["ip", "-4", "-j", "addr", "show"]):
        for a in entry.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def choose_subnet(name: str) -> ipaddress.IPv4Network:
    """A private /24 (``10.213.X.0/24``, X from the name first) that no route or address overlaps."""
    used = _used_networks()
    start = zlib.crc32(name.encode()) % 256
    for k in range(256):
        net = ipaddress.IPv4Network(f"10.213.{(start + k) % 256}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise ClusterError("no free /24 in 10.213.0.0/16: every one overlaps a route or an address (see ip route)")


# ----------------------------------------------------------------------------- state


def _state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _write_state(cluster: Cluster) -> None:
    path = _state_path(cluster.name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cluster.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)


def load(name: str) -> Cluster:
    """The cluster ``name`` as its state file records it.

    Raises
    ------
    ConfigError
        When there is no such cluster (naming ``gdcode cluster up``) or its state file is damaged.
    """
    path = _state_path(check_name(name))
    try:
        return Cluster.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no emulated cluster {name!r} (no {path}): create it with `gdcode cluster up {name} "
                          "--hosts N`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"the state file {path} of cluster {name!r} cannot be read ({exc}); remove the cluster "
                          f"with `gdcode cluster down {name}`") from None


def names() -> list[str]:
    """Every cluster with a state file, and every name that only leftover namespaces or links carry."""
    found = set()
    directory = state_dir()
    if directory.is_dir():
        found |= {p.stem for p in directory.glob("*.json") if _NAME_RE.match(p.stem)}
    pattern = re.compile(rf"^{re.escape(PREFIX)}([a-z0-9]{{1,{MAX_NAME}}})-(br|eth|tun|[hv][0-9]{{1,2}})$")
    for obj in namespaces() + links():
        m = pattern.match(obj)
        if m:
            found.add(m.group(1))
    return sorted(found)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One ``up`` or ``down`` at a time under one state directory (choosing a subnet must not race)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- up


class _Builder:
    """The objects of a cluster being made, recorded in its state file as they are made."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.delay = float(os.environ.get(STEP_DELAY_ENV) or 0.0)
        _write_state(cluster)

    def made(self, kind: str, name: str, **changes: Any) -> None:
        self.cluster = dataclasses.replace(self.cluster, objects=(*self.cluster.objects, (kind, name)), **changes)
        _write_state(self.cluster)
        if self.delay:
            time.sleep(self.delay)


@contextlib.contextmanager
def _signal_handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """Install ``handlers`` (signal -> handler) for the block, then restore the previous ones;
    outside the main thread signals stay as they are."""
    try:
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _signals_raise() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` (SIGINT raises KeyboardInterrupt as usual)."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    return _signal_handlers({signal.SIGTERM: handler, signal.SIGHUP: handler,
                             signal.SIGINT: signal.default_int_handler})


def _signals_ignored() -> contextlib.AbstractContextManager[None]:
    """No signal interrupts the clean-up."""
    return _signal_handlers(dict.fromkeys((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), signal.SIG_IGN))


def up(name: str, hosts: int, slots: int = 1, bandwidth: str | None = None, latency: float | None = None,
       latency_method: str = "auto") -> Cluster:
    """Make the emulated cluster ``name``: ``hosts`` namespaces on a bridge (see the module).

    Parameters
    ----------
    name : str
        At most :data:`MAX_NAME` lowercase letters or digits.
    hosts : int
        Emulated hosts, 2 to :data:`MAX_HOSTS`: host 0 runs the coordinator.
    slots : int
        Ranks each of hosts 1..N-1 runs (workers per host).
    bandwidth : str, optional
        Every link's rate in both directions, in tc's notation (``100mbit``); None: unshaped.
    latency : float, optional
        One-way delay between two hosts, seconds; None or 0: none.
    latency_method : {"auto", "netem", "relay"}
        How the latency is made: ``auto`` uses netem when the kernel has it, else the relay.

    Returns
    -------
    Cluster

    Raises
    ------
    ConfigError
        For bad values, a cluster of that name that exists, or :class:`Unavailable`.
    ClusterError
        When a command fails; everything made so far is removed first.
    KeyboardInterrupt, Interrupted
        On SIGINT, SIGTERM or SIGHUP; everything made so far is removed first.
    """
    check_name(name)
    if not 2 <= hosts <= MAX_HOSTS:
        raise ConfigError(f"--hosts {hosts}: must be from 2 to {MAX_HOSTS} (host 0 runs the coordinator, the "
                          "others the workers)")
    if slots < 1:
        raise ConfigError(f"--slots {slots}: must be at least 1")
    rate = parse_rate(bandwidth) if bandwidth is not None else None
    if latency is not None and not 0 <= latency <= 10:
        raise ConfigError(f"--latency {latency}: must be from 0 to 10 seconds")
    latency = latency or None
    if latency_method not in LATENCY_METHODS:
        raise ConfigError(f"--latency-method {latency_method}: must be one of {', '.join(LATENCY_METHODS)}")
    check_environment()
    with _lock():
        if _state_path(name).exists():
            raise ConfigError(f"cluster {name!r} exists (see `gdcode cluster status {name}`); remove it first with "
                              f"`gdcode cluster down {name}`")
        left = leftovers(name)
        if left:
            raise ConfigError(f"objects of an earlier cluster {name!r} are still there ({', '.join(left)}); remove "
                              f"them with `gdcode cluster down {name}`")
        with _signals_raise():
            builder: _Builder | None = None
            try:
                subnet = choose_subnet(name)
                addrs = list(subnet.hosts())
                p = prefix(name)
                cluster = Cluster(
                    name=name, slots=slots, subnet=str(subnet), bridge=f"{p}br", bridge_address=str(addrs[-1]),
                    hosts=tuple(Host(i, f"{p}h{i}", f"{p}v{i}", f"{p}eth", str(addrs[i])) for i in range(hosts)),
                    bandwidth=bandwidth, latency=latency, status="creating", state_dir=str(state_dir().resolve()),
                    created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
                cluster.directory.mkdir(parents=True, exist_ok=True)
                builder = _Builder(cluster)
                _build(builder, rate, latency, latency_method)
                builder.cluster = dataclasses.replace(builder.cluster, status="up")
                _write_state(builder.cluster)
                return builder.cluster
            except BaseException:
                with _signals_ignored():
                    if builder is not None:
                        _remove(builder.cluster)
                    else:
                        _remove_files(name)
                raise


def _build(b: _Builder, rate: float | None, latency: float | None, latency_method: str) -> None:
    c = b.cluster
    _run(["ip", "link", "add", c.bridge, "type", "bridge"])
    b.made("link", c.bridge)
    _run(["ip", "addr", "add", f"{c.bridge_address}/24", "dev", c.bridge])
    _run(["ip", "link", "set", c.bridge, "up"])
    for h in c.hosts:
        proc = _run(["ip", "netns", "add", h.namespace], check=False)
        if proc.returncode != 0:
            if h.index == 0:
                raise Unavailable(f"cannot create a network namespace ({proc.stderr.strip()}): run on a host, or in "
                                  "a container with CAP_SYS_ADMIN (docker run --privileged)")
            raise ClusterError(f"`ip netns add {h.namespace}` failed: {proc.stderr.strip()}")
        b.made("netns", h.namespace)
        _run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", h.peer, "netns", h.namespace])
        b.made("link", h.veth)
        _run(["ip", "link", "set", h.veth, "master", c.bridge, "up"])
        _run(["ip", "-n", h.namespace, "addr", "add", f"{h.address}/24", "dev", h.peer])
        _run(["ip", "-n", h.namespace, "link", "set", h.peer, "up"])
        _run(["ip", "-n", h.namespace, "link", "set", "lo", "up"])
    method = None
    if latency:
        method = latency_method
        if method == "auto":
            method = "netem" if netem_available(c.hosts[0].namespace) else "relay"
        elif method == "netem" and not netem_available(c.hosts[0].namespace):
            raise ConfigError("--latency-method netem: this kernel has no netem qdisc; use --latency-method relay "
                              "(or auto)")
        b.cluster = dataclasses.replace(b.cluster, latency_method=method)
    for h in c.hosts:
        for argv in shaping_commands(h.veth, rate, None):
            _run(argv)
        for argv in shaping_commands(h.peer, rate, latency if method == "netem" else None, h.namespace):
            _run(argv)
    if method == "relay":
        _start_relay(b, rate)
    _write_launcher(b.cluster)
    _write_hostfile(b.cluster)


def _start_relay(b: _Builder, rate: float | None) -> None:
    c = b.cluster
    net = ipaddress.IPv4Network(c.subnet)
    hosts = tuple(dataclasses.replace(h, tun=f"{c.prefix}tun", tun_address=str(net[TUN_HOST_BASE + h.index]))
                  for h in c.hosts)
    b.cluster = c = dataclasses.replace(c, hosts=hosts)
    for h in hosts:
        assert h.tun is not None
        _run(["ip", "-n", h.namespace, "tuntap", "add", "dev", h.tun, "mode", "tun"])
        b.made("tun", f"{h.namespace}/{h.tun}")
    config = c.directory / "relay.json"
    config.write_text(json.dumps({
        "cluster": c.name, "latency": c.latency, "rate": rate, "burst": burst_bytes(rate) if rate else None,
        "limit": QUEUE_LIMIT, "stats": str(c.directory / "relay-stats.json"),
        "hosts": [{"namespace": h.namespace, "tun": h.tun, "address": h.tun_address} for h in hosts]}, indent=1) + "\n")
    read, write = os.pipe()
    try:
        with open(c.directory / "relay.log", "ab") as log:
            proc = subprocess.Popen([*_relay_argv(c), "--ready-fd", str(write)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True, pass_fds=(write,))
        os.close(write)
        write = -1
        b.made("process", str(proc.pid), relay_pid=proc.pid)
        ready = _read_ready(read, proc)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    if not ready:
        tail = (c.directory / "relay.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise ClusterError(f"the latency relay did not start ({tail[0] if tail else 'no output'}); see "
                           f"{c.directory / 'relay.log'}")
    for h in hosts:
        _run(["ip", "-n", h.namespace, "link", "set", str(h.tun), "mtu", str(TUN_MTU), "up"])
        _run(["ip", "-n", h.namespace, "addr", "add", f"{h.tun_address}/32", "dev", str(h.tun)])
        for other in hosts:
            if other.index != h.index:
                _run(["ip", "-n", h.namespace, "route", "add", f"{other.tun_address}/32", "dev", str(h.tun), "src",
                      str(h.tun_address)])


def _relay_argv(c: Cluster) -> list[str]:
    return [sys.executable, "-m", "gdcode.cluster.relay", str(c.directory / "relay.json")]


def _read_ready(fd: int, proc: subprocess.Popen) -> bool:
    import select

    end = time.monotonic() + RELAY_START_TIMEOUT
    data = b""
    while time.monotonic() < end:
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            chunk = os.read(fd, 64)
            if not chunk:
                return b"ready" in data
            data += chunk
            if b"ready" in data:
                return True
        elif proc.poll() is not None:
            return False
    return False


def _write_launcher(c: Cluster) -> None:
    ip = shutil.which("ip") or "ip"
    text = f"""#!/bin/sh
# hydra's launcher for the emulated cluster {c.name} (written by `gdcode cluster up`).
# hydra calls it as: launcher [ssh options] HOST COMMAND...; it runs COMMAND in the network
# namespace HOST, one of this cluster's hosts ({c.prefix}h0 ... {c.prefix}h{len(c.hosts) - 1}).
while [ $# -gt 0 ]; do
  case "$1" in
    -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=$1
shift
case "$host" in
  {c.prefix}h[0-9]|{c.prefix}h[0-9][0-9]) ;;
  *) echo "launcher of cluster {c.name}: '$host' is not one of its hosts" >&2; exit 255 ;;
esac
exec {ip} netns exec "$host" sh -c "exec $*"
"""
    c.launcher.write_text(text)
    c.launcher.chmod(0o755)


def _write_hostfile(c: Cluster) -> None:
    env = " ".join(f"-genv {k} {v}" for k, v in net_env(c).items())
    lines = [f"# hydra hostfile of the emulated cluster {c.name}: host 0 runs rank 0 (the coordinator)",
             f"# by hand: mpiexec -launcher ssh -launcher-exec {c.launcher} -localhost {c.bridge_address} "
             f"-f {c.hostfile} {env} -n {1 + c.max_workers} ...",
             f"{c.hosts[0].namespace}:1"]
    lines += [f"{h.namespace}:{c.slots}" for h in c.hosts[1:]]
    c.hostfile.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- down


def leftovers(name: str) -> list[str]:
    """Namespaces, root-namespace links and relay processes of cluster ``name`` that exist now."""
    pattern = _object_re(name)
    out = [f"netns {n}" for n in namespaces() if pattern.match(n)]
    out += [f"link {n}" for n in links() if pattern.match(n)]
    out += [f"process {pid}" for pid in _relay_processes(name)]
    return out


def _relay_cmdline(name: str) -> list[bytes]:
    """What follows the interpreter in the command line of cluster ``name``'s relay (:func:`_relay_argv`)."""
    return [b"-m", b"gdcode.cluster.relay", str((state_dir() / name / "relay.json").resolve()).encode()]


def _is_relay(pid: int, argv: list[bytes]) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:4] == argv
    except OSError:
        return False


def _relay_processes(name: str) -> list[int]:
    """Pids of relays running cluster ``name``'s configuration (their command line, exactly)."""
    argv = _relay_cmdline(name)
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _is_relay(int(e.name), argv)]


def _stop_process(pid: int, name: str) -> None:
    """SIGTERM (then SIGKILL) to the relay ``pid`` if it still is this cluster's relay."""
    argv = _relay_cmdline(name)
    if not _is_relay(pid, argv):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and _is_relay(pid, argv):
        _reap(pid)
        time.sleep(0.02)
    if _is_relay(pid, argv):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (a relay ``up`` started in this process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _remove(cluster: Cluster) -> list[str]:
    """Remove what ``cluster`` lists, then everything else carrying its prefix; what was removed."""
    removed = []
    name = cluster.name
    for pid in _relay_processes(name):  # the recorded relay among them, when it still runs
        _stop_process(pid, name)
        removed.append(f"process {pid}")
    pattern = _object_re(name)
    recorded_links = [n for k, n in cluster.objects if k == "link"]
    recorded_ns = [n for k, n in cluster.objects if k == "netns"]
    present_links = set(links())
    for link in reversed([n for n in recorded_links if n in present_links and pattern.match(n)]
                         + sorted(n for n in present_links if pattern.match(n) and n not in recorded_links)):
        if _run(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(f"link {link}")
    present_ns = set(namespaces())
    for ns in [n for n in recorded_ns if n in present_ns] + sorted(n for n in present_ns if pattern.match(n)
                                                                  and n not in recorded_ns):
        if _run(["ip", "netns", "del", ns], check=False).returncode == 0:
            removed.append(f"netns {ns}")
    _wait_gone(name)
    _remove_files(name)
    return removed


def _wait_gone(name: str) -> None:
    """Wait until the kernel has dismantled the namespaces (their veths go a moment after ``ip netns del``)."""
    end = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < end:
        if not leftovers(name):
            return
        time.sleep(0.05)
    left = leftovers(name)
    if left:
        raise ClusterError(f"cluster {name}: still there after removal: {', '.join(left)}")


def _remove_files(name: str) -> None:
    directory = state_dir()
    shutil.rmtree(directory / name, ignore_errors=True)
    for path in (directory / f"{name}.json", directory / f"{name}.json.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def down(name: str) -> list[str]:
    """Remove the cluster ``name``: what its state file lists and everything carrying its prefix.

    Parameters
    ----------
    name : str

    Returns
    -------
    list of str
        What was removed (``"netns gdc-x-h0"``, ``"link gdc-x-br"``, ``"process 1234"``); empty when
        there was nothing.

    Raises
    ------
    ClusterError
        When something carrying the prefix is still there afterwards.
    """
    check_name(name)
    check_environment()
    with _lock():
        try:
            cluster = load(name)
        except ConfigError:  # no state file, or a damaged one: sweep by the prefix alone
            cluster = Cluster(name=name, hosts=(), slots=1, subnet="", bridge="", bridge_address="",
                              state_dir=str(state_dir().resolve()))
        with _signals_ignored():
            return _remove(cluster)


# ----------------------------------------------------------------------------- inspecting, launching


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def counters(cluster: Cluster) -> list[dict[str, int | None]]:
    """Each host's link byte counters, read from the bridge's end of its veth (and its TUN with the relay).

    Returns
    -------
    list of dict
        Per host: ``to_host`` and ``from_host`` (bytes the veth carried into and out of the host),
        and with the relay ``tun_from_host`` and ``tun_to_host``; None where an interface is gone.
    """
    out = []
    for h in cluster.hosts:
        stats = Path("/sys/class/net") / h.veth / "statistics"
        row: dict[str, int | None] = {"to_host": _read_int(stats / "tx_bytes"),
                                      "from_host": _read_int(stats / "rx_bytes")}
        if h.tun:
            try:
                entry = _json(["ip", "-n", h.namespace, "-j", "-s", "link", "show", "dev", h.tun])[0]
                row["tun_from_host"] = int(entry["stats64"]["tx"]["bytes"])
                row["tun_to_host"] = int(entry["stats64"]["rx"]["bytes"])
            except (ClusterError, IndexError, KeyError, ValueError):
                row["tun_from_host"] = row["tun_to_host"] = None
        out.append(row)
    return out


def status(name: str) -> dict[str, Any]:
    """The cluster ``name``: its state, whether its objects are there, its links' byte counters.

    Returns
    -------
    dict
        The state file's keys, plus ``missing`` (recorded namespaces or links not there),
        ``relay_alive``, ``relay_stats`` (the relay's counters) and ``counters`` (see :func:`counters`).
    """
    check_environment()
    cluster = load(name)
    present = set(namespaces()) | set(links())
    missing = [n for k, n in cluster.objects if k == "netns" and n not in present]
    missing += [n for k, n in cluster.objects if k == "link" and n not in present]
    out = cluster.to_dict()
    stats_path = cluster.directory / "relay-stats.json"
    try:
        relay_stats = json.loads(stats_path.read_text()) if cluster.relay_pid else None
    except (OSError, ValueError):
        relay_stats = None
    out.update(missing=missing, relay_alive=process_alive(cluster.relay_pid) if cluster.relay_pid else None,
               relay_stats=relay_stats, counters=counters(cluster), max_workers=cluster.max_workers,
               launcher=str(cluster.launcher), hostfile=str(cluster.hostfile))
    return out


def placement(cluster: Cluster, workers: int) -> tuple[tuple[str, int], ...]:
    """Rank 0 alone on host 0, the ``workers`` spread evenly over hosts 1..N-1 in blocks (at most ``slots`` each).

    Raises
    ------
    ConfigError
        When the workers do not fit.
    """
    if workers > cluster.max_workers:
        raise ConfigError(f"--workers {workers}: cluster {cluster.name} has room for {cluster.max_workers} "
                          f"({len(cluster.hosts) - 1} worker hosts x {cluster.slots} slots); use fewer workers or "
                          f"a cluster with more hosts or --slots")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    n = len(cluster.hosts) - 1
    out = [(cluster.hosts[0].namespace, 1)]
    for i, h in enumerate(cluster.hosts[1:]):
        count = workers // n + (1 if i < workers % n else 0)
        if count:
            out.append((h.namespace, count))
    return tuple(out)


def launch_spec(name: str, workers: int | None = None) -> LaunchSpec:
    """What ``gdcode run --cluster NAME`` adds to ``mpiexec``: the launcher, the placement, TCP between hosts.

    Parameters
    ----------
    name : str
        A cluster that is up.
    workers : int, optional
        Workers to place (see :func:`placement`); None: every slot.

    Returns
    -------
    LaunchSpec

    Raises
    ------
    ConfigError
        When the cluster does not exist or is incomplete, the workers do not fit, or this machine
        cannot run it (:class:`Unavailable`).
    """
    check_environment()
    cluster = load(name)
    if cluster.status != "up":
        raise ConfigError(f"cluster {name!r} was not finished (status {cluster.status}); remove it with "
                          f"`gdcode cluster down {name}` and make it again")
    present = set(namespaces())
    gone = [h.namespace for h in cluster.hosts if h.namespace not in present]
    if gone:
        raise ConfigError(f"cluster {name!r}: its namespaces {', '.join(gone)} are gone; remove it with `gdcode "
                          f"cluster down {name}` and make it again")
    if cluster.relay_pid and not process_alive(cluster.relay_pid):
        raise ConfigError(f"cluster {name!r}: its latency relay (pid {cluster.relay_pid}) is not running; remove "
                          f"it with `gdcode cluster down {name}` and make it again")
    places = placement(cluster, cluster.max_workers if workers is None else workers)
    args = ("-launcher", "ssh", "-launcher-exec", str(cluster.launcher), "-localhost", cluster.bridge_address,
            "-hosts", ",".join(f"{ns}:{k}" for ns, k in places))
    return LaunchSpec(cluster=name, mpiexec_args=args, env=net_env(cluster), placement=places)


def net_env(cluster: Cluster) -> dict[str, str]:
    """The variables that keep MPI's traffic between hosts on TCP over the cluster's data plane.

    :data:`NET_ENV` (MPICH's OFI netmod, libfabric's tcp provider: sockets, never shared memory
    between namespaces), and ``FI_TCP_IFACE``: the hosts' veth (``gdc-NAME-eth``), or with the
    relay their TUN (``gdc-NAME-tun``), whose addresses the peers then connect to, so that every
    message crosses the relay's delay. Every host has the same name for it. Ranks on one host
    still share memory (MPICH's shared-memory transport, by hydra's host names).
    """
    host = cluster.hosts[0]
    return {**NET_ENV, "FI_TCP_IFACE": host.tun or host.peer}
