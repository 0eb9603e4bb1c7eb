"""The latency relay of an emulated cluster: packets between hosts, delayed and shaped in user space.

Used by :mod:`gdcode.cluster.emulate` when a cluster has a latency and the kernel has no
``netem`` qdisc. Every host (network namespace) has a TUN device with an address of its own, and
routes every other host's TUN address through it, so each IPv4 packet one host sends another's
TUN address comes out of the sender's TUN.
One process, this one, enters each namespace with ``setns`` to attach to its TUN, reads the
packets, and writes each into the destination host's TUN when it is due.

When a packet is due models a star network (every host's link to one switch), the same links
the bridge and veth pairs form without the relay:

1. the sender's uplink: a token bucket at the link's rate (``burst`` bytes deep), first in first
   out; the packet leaves when the bucket holds its size;
2. the path: ``latency`` seconds, the one-way delay between two hosts;
3. the receiver's downlink: another token bucket at the same rate, so that several hosts sending
   to one (workers' gradients to the coordinator) share its link, as on a real switch.

A packet that would wait more than ``limit`` seconds (100 ms, tbf's ``latency``) for either
bucket is dropped, as tbf drops it; TCP then backs off. Without a rate only the delay applies.
The pending packets are a heap of (due time, sequence number, stage, destination, packet); the
process sleeps in ``select`` until the next one is due or a packet comes, so it does not spin
when the cluster is idle.

The process ends on SIGTERM, SIGINT or SIGHUP, and on its own within a second once any of its
namespaces is gone (``gdcode cluster down`` stops it first, by its pid). Its TUN file
descriptors hold the namespaces alive, so it must end before they can really go.

``python -m gdcode.cluster.relay CONFIG.json [--ready-fd FD]``: CONFIG (written by
:func:`gdcode.cluster.emulate.up`) has ``hosts`` (a list of ``{"namespace", "tun", "address"}``),
``latency`` (seconds), ``rate`` (bytes per second, or null), ``burst`` (bytes), ``limit``
(seconds) and ``stats`` (a file rewritten with the counters at most once a second). The relay
writes ``ready`` to FD once every TUN is attached.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import heapq
import itertools
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: ioctl of /dev/net/tun that attaches the file to a device; flags of a TUN (IP packets, no header)
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
#: where ``ip netns`` keeps a namespace's name
NETNS_DIR = Path("/run/netns")
#: the largest packet read from a TUN (its MTU is at most 65535)
MAX_PACKET = 65536
#: packets read from one TUN before the others get a turn
READ_BATCH = 64
#: seconds between checks that every namespace still exists, and between stats writes
CHECK_EVERY = 1.0

UPLINK_DONE, DOWNLINK_DONE = 0, 1


class Stop(Exception):
    """A signal asked the relay to end."""


class Bucket:
    """A first-in first-out token bucket: when each packet leaves a link of ``rate`` bytes/s.

    Parameters
    ----------
    rate : float
        Bytes per second.
    burst : float
        Bytes the bucket holds (a packet larger than it waits for ``size`` tokens all the same).
    limit : float
        A packet that would wait longer than this many seconds is dropped.
    """

    __slots__ = ("rate", "burst", "limit", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, limit: float) -> None:
        self.rate, self.burst, self.limit = float(rate), float(burst), float(limit)
        self.tokens = self.burst
        self.stamp = -float("inf")  # when ``tokens`` was right; also when the last packet left

    def depart(self, now: float, size: int) -> float | None:
        """When a packet of ``size`` bytes that reaches the link at ``now`` leaves it; ``None``: dropped.

        Packets must be offered in order of ``now``.
        """
        start = max(now, self.stamp)
        tokens = self.burst if self.stamp == -float("inf") else min(
            self.burst, self.tokens + (start - self.stamp) * self.rate)
        if tokens < size:
            start += (size - tokens) / self.rate
            tokens = float(size)
        if start - now > self.limit:
            return None
        self.tokens = tokens - size
        self.stamp = start
        return start


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def open_tun(namespace: str, tun: str, netns_dir: Path = NETNS_DIR) -> int:
    """Attach to the TUN device ``tun`` inside ``namespace``; a non-blocking file descriptor.

    The calling thread enters the namespace for the attach and returns to its own.
    """
    libc = _libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_dir / namespace, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tun.encode(), IFF_TUN | IFF_NO_PI))
            except OSError:
                os.close(fd)
                raise
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the relay's namespace: {os.strerror(err)}")
    finally:
        os.close(target)
        os.close(own)
    return fd


class Relay:
    """Forward IPv4 packets between the hosts' TUN devices, delayed and shaped (see the module).

    Parameters
    ----------
    fds : sequence of int
        One attached TUN per host, in host order.
    addresses : sequence of str
        Each host's IPv4 address: packets are routed by their destination address.
    latency : float
        One-way delay between two hosts, seconds.
    rate, burst, limit : float or None
        The links' token buckets (``rate`` None: no shaping).
    """

    def __init__(self, fds: Sequence[int], addresses: Sequence[str], latency: float,
                 rate: float | None = None, burst: float = 65536.0, limit: float = 0.1) -> None:
        self.fds = list(fds)
        self.host_of = {socket.inet_aton(a): i for i, a in enumerate(addresses)}
        self.latency = float(latency)
        n = len(self.fds)
        self.up = [Bucket(rate, burst, limit) for _ in range(n)] if rate else None
        self.down = [Bucket(rate, burst, limit) for _ in range(n)] if rate else None
        self.heap: list[tuple[float, int, int, int, bytes]] = []
        self.seq = itertools.count()
        self.counts = {"packets": 0, "bytes": 0, "dropped_queue": 0, "dropped_unroutable": 0,
                       "write_errors": 0}

    def receive(self, src: int, packet: bytes, now: float) -> None:
        """A packet host ``src`` sent: queue it for its destination, or drop it."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.counts["dropped_unroutable"] += 1
            return
        dst = self.host_of.get(packet[16:20])
        if dst is None or dst == src:
            self.counts["dropped_unroutable"] += 1
            return
        leaves = now
        if self.up is not None:
            departure = self.up[src].depart(now, len(packet))
            if departure is None:
                self.counts["dropped_queue"] += 1
                return
            leaves = departure
        stage = UPLINK_DONE if self.down is not None else DOWNLINK_DONE
        heapq.heappush(self.heap, (leaves + self.latency, next(self.seq), stage, dst, packet))

    def due(self, now: float) -> None:
        """Move every packet whose time has come: through its downlink, or out to its host."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            when, _, stage, dst, packet = heapq.heappop(heap)
            if stage == UPLINK_DONE and self.down is not None:
                departure = self.down[dst].depart(when, len(packet))
                if departure is None:
                    self.counts["dropped_queue"] += 1
                    continue
                if departure > now:
                    heapq.heappush(heap, (departure, next(self.seq), DOWNLINK_DONE, dst, packet))
                    continue
            try:
                os.write(self.fds[dst], packet)
            except OSError:
                self.counts["write_errors"] += 1
                continue
            self.counts["packets"] += 1
            self.counts["bytes"] += len(packet)

    def timeout(self, now: float, idle: float) -> float:
        """Seconds to sleep: until the next packet is due, at most ``idle``."""
        if not self.heap:
            return idle
        return min(idle, max(0.0, self.heap[0][0] - now))

    def serve(self, alive: Any = None, stats: Path | None = None) -> None:
        """Forward packets until ``alive()`` turns false (checked every second) or a read fails."""
        index = {fd: i for i, fd in enumerate(self.fds)}
        next_check = time.monotonic() + CHECK_EVERY
        written: dict[str, int] = {}
        while True:
            now = time.monotonic()
            readable, _, _ = select.select(self.fds, [], [], self.timeout(now, max(0.0, next_check - now)))
            now = time.monotonic()
            for fd in readable:
                src = index[fd]
                for _ in range(READ_BATCH):
                    try:
                        packet = os.read(fd, MAX_PACKET)
                    except BlockingIOError:
                        break
                    self.receive(src, packet, now)
            self.due(time.monotonic())
            if now >= next_check:
                next_check = now + CHECK_EVERY
                if alive is not None and not alive():
                    return
                if stats is not None and self.counts != written:
                    _write_json(stats, {**self.counts, "pending": len(self.heap), "pid": os.getpid()})
                    written = dict(self.counts)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


def _stop(signum: int, frame: object) -> None:
    raise Stop(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the relay of one cluster (see the module); exit code 0 when stopped, 1 on an error."""
    parser = argparse.ArgumentParser(prog="python -m gdcode.cluster.relay", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="the relay's JSON configuration (written by gdcode cluster up)")
    parser.add_argument("--ready-fd", type=int, default=None, help="write 'ready' here once attached")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    cfg = json.loads(Path(args.config).read_text())
    hosts = cfg["hosts"]
    netns_dir = Path(cfg.get("netns_dir", str(NETNS_DIR)))
    fds: list[int] = []
    try:
        for host in hosts:
            fds.append(open_tun(host["namespace"], host["tun"], netns_dir))
        relay = Relay(fds, [h["address"] for h in hosts], float(cfg.get("latency") or 0.0), cfg.get("rate"),
                      float(cfg.get("burst") or 65536), float(cfg.get("limit") or 0.1))
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)
        names = [netns_dir / h["namespace"] for h in hosts]
        stats = Path(cfg["stats"]) if cfg.get("stats") else None
        print(f"relay {os.getpid()}: {len(hosts)} hosts, latency {cfg.get('latency')} s, rate {cfg.get('rate')} B/s",
              flush=True)
        relay.serve(alive=lambda: all(p.exists() for p in names), stats=stats)
        print(f"relay {os.getpid()}: a namespace is gone; ending", flush=True)
    except Stop as exc:
        print(f"relay {os.getpid()}: signal {exc.args[0]}; ending", flush=True)
    except OSError as exc:
        print(f"relay {os.getpid()}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for fd in fds:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
