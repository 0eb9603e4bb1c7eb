"""Emulate a cluster on this machine: ``gdcode cluster up|status|down``.

up NAME --hosts N makes N emulated hosts (network namespaces on a bridge, a veth pair each),
every link shaped to --bandwidth RATE in both directions (tc's notation: 100mbit, 1gbit) and
delayed by --latency SECONDS one way between two hosts (netem where the kernel has it, else a
relay process over TUN devices). gdcode run --cluster NAME then runs the coordinator on host 0
and the workers on hosts 1..N-1 (--slots each), over TCP across the emulated links. status
shows the hosts, addresses, shaping, latency, relay and the links' byte counters; down removes
everything the cluster made, also after a crash. Needs root. State: $GDCODE_CLUSTER_DIR
(default /run/gdcode/clusters). Exit codes: 0 done, 1 a command failed (nothing is left
behind), 2 bad input or a machine that cannot do it (not root, no ip, no namespaces), 130 and
143 interrupted by SIGINT or SIGTERM (nothing is left behind).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from gdcode.cluster import ClusterError, emulate

#: the Examples section of the help page
EXAMPLES = """\
sudo .venv/bin/gdcode cluster up lab --hosts 5 --bandwidth 100mbit
sudo .venv/bin/gdcode run --cluster lab --workers 4 --dataset synthetic:2000x50000 --iterations 20
sudo .venv/bin/gdcode cluster up far --hosts 3 --slots 2 --bandwidth 1gbit --latency 0.005
sudo .venv/bin/gdcode cluster status          # every cluster
sudo .venv/bin/gdcode cluster status lab      # hosts, shaping, byte counters
sudo .venv/bin/gdcode cluster down lab
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("up", help="make an emulated cluster", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Make N emulated hosts joined by a bridge, with shaped links.")
    p.add_argument("name", metavar="NAME", help=f"the cluster's name: at most {emulate.MAX_NAME} lowercase letters "
                                                "or digits")
    p.add_argument("--hosts", type=int, required=True, metavar="N",
                   help=f"emulated hosts, 2 to {emulate.MAX_HOSTS}: host 0 runs the coordinator, the others workers")
    p.add_argument("--slots", type=int, default=1, metavar="K", help="workers each of hosts 1..N-1 runs (default 1)")
    p.add_argument("--bandwidth", metavar="RATE", help="every link's rate in both directions, in tc's notation "
                                                       "(100mbit, 1gbit; default: unshaped)")
    p.add_argument("--latency", type=float, metavar="SECONDS",
                   help="one-way delay between two hosts, seconds (e.g. 0.005; default none)")
    p.add_argument("--latency-method", choices=emulate.LATENCY_METHODS, default="auto",
                   help="auto: netem when the kernel has it, else the TUN relay (default auto)")
    p = sub.add_parser("status", help="show one cluster, or list them all")
    p.add_argument("name", nargs="?", metavar="NAME", help="the cluster (default: list every cluster)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p = sub.add_parser("down", help="remove an emulated cluster and everything it made")
    p.add_argument("name", metavar="NAME", help="the cluster")


def main(args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            return _up(args)
        if args.action == "status":
            return _status(args)
        removed = emulate.down(args.name)
        print(f"cluster {args.name}: removed {len(removed)} object(s)" if removed
              else f"cluster {args.name}: nothing to remove")
        return 0
    except ClusterError as exc:
        print(f"gdcode cluster {args.action}: error: {exc}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace) -> int:
    try:
        cluster = emulate.up(args.name, args.hosts, slots=args.slots, bandwidth=args.bandwidth, latency=args.latency,
                             latency_method=args.latency_method)
    except KeyboardInterrupt:
        print(f"gdcode cluster up: interrupted; removed what it had made of cluster {args.name}", file=sys.stderr)
        return 128 + signal.SIGINT
    except emulate.Interrupted as exc:
        print(f"gdcode cluster up: signal {exc.signum}; removed what it had made of cluster {args.name}",
              file=sys.stderr)
        return 128 + exc.signum
    _print_cluster(emulate.status(cluster.name))
    print(f"run on it: gdcode run --cluster {cluster.name} --workers W (W up to {cluster.max_workers})")
    return 0


def _status(args: argparse.Namespace) -> int:
    emulate.check_environment()
    if args.name:
        info = emulate.status(args.name)
        if args.json:
            print(json.dumps(info, indent=1))
        else:
            _print_cluster(info)
        return 0
    everything = []
    for name in emulate.names():
        try:
            everything.append(emulate.status(name))
        except emulate.ConfigError:  # leftovers without a state file
            everything.append({"name": name, "status": "leftovers", "leftovers": emulate.leftovers(name)})
    if args.json:
        print(json.dumps(everything, indent=1))
        return 0
    if not everything:
        print(f"no emulated clusters (state in {emulate.state_dir()})")
    for info in everything:
        if info["status"] == "leftovers":
            print(f"{info['name']}: no state file, but {', '.join(info['leftovers'])} are there: remove them with "
                  f"`gdcode cluster down {info['name']}`")
        else:
            print(f"{info['name']}: {_summary(info)}")
    return 0


def _summary(info: dict[str, Any]) -> str:
    shaping = info["bandwidth"] or "unshaped"
    latency = f", latency {info['latency']:g} s ({info['latency_method']})" if info["latency"] else ""
    broken = f", MISSING {', '.join(info['missing'])}" if info["missing"] else ""
    if info["relay_alive"] is False:
        broken += f", relay {info['relay_pid']} NOT RUNNING"
    status = "" if info["status"] == "up" else f" [{info['status']}: unfinished; remove it with gdcode cluster down]"
    return (f"{len(info['hosts'])} hosts, {info['slots']} slot(s) each on hosts 1.., {info['subnet']}, "
            f"{shaping}{latency}{broken}{status}")


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def _print_cluster(info: dict[str, Any]) -> None:
    print(f"cluster {info['name']}: {_summary(info)}")
    print(f"  bridge {info['bridge']} {info['bridge_address']}; state {info['state_dir']}/{info['name']}.json")
    if info["bandwidth"]:
        rate = emulate.parse_rate(info["bandwidth"])
        where = "the relay's token buckets (host to host) and " if info["latency_method"] == "relay" else ""
        print(f"  shaping: {info['bandwidth']} each way on every link: {where}tbf burst {emulate.burst_bytes(rate)} "
              f"latency {emulate.QUEUE_LIMIT * 1000:.0f}ms on both ends of each veth")
    if info["latency"]:
        how = ("netem on each host's end of its veth" if info["latency_method"] == "netem" else
               f"relay pid {info['relay_pid']} ({'running' if info['relay_alive'] else 'NOT RUNNING'}) over TUNs, "
               f"MTU {emulate.TUN_MTU}")
        print(f"  latency: {info['latency']:g} s one way between two hosts, by {how}")
        stats = info.get("relay_stats")
        if stats:
            print(f"  relay: {stats['packets']} packets, {_size(stats['bytes'])} forwarded, "
                  f"{stats['dropped_queue']} dropped at a full link")
    tun = any(h.get("tun") for h in info["hosts"])
    head = f"  {'host':<5}{'namespace':<14}{'address':<14}{'runs':<13}{'veth in':>10}{'veth out':>10}"
    print(head + (f"{'tun in':>10}{'tun out':>10}  tun address" if tun else ""))
    for h, c in zip(info["hosts"], info["counters"], strict=True):
        runs = "coordinator" if h["index"] == 0 else f"{info['slots']} worker(s)"
        line = (f"  {h['index']:<5}{h['namespace']:<14}{h['address']:<14}{runs:<13}{_size(c['to_host']):>10}"
                f"{_size(c['from_host']):>10}")
        if tun:
            line += f"{_size(c.get('tun_to_host')):>10}{_size(c.get('tun_from_host')):>10}  {h.get('tun_address')}"
        print(line)
    print(f"  launcher {info['launcher']}; hostfile {info['hostfile']}")
