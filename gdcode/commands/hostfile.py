"""Write a hostfile for MPICH (``host:N``) or Open MPI (``host slots=N``), coordinator first.

``gdcode hostfile --hosts a,b,c --slots N --format mpich|openmpi [--out FILE]``, or
``--from FILE`` with one address a line (lines of either hostfile format are read too, so
this also converts a hostfile). The first host runs rank 0, the coordinator. Without
``--out`` the hostfile is printed.
"""

from __future__ import annotations

import argparse
import sys

from gdcode.cluster import hostfile
from gdcode.errors import ConfigError

#: the Examples section of the help page
EXAMPLES = """\
gdcode hostfile --hosts node0,node1,node2 --slots 2 --out hostfile.mpich
gdcode hostfile --hosts node0:1,node1:4 --format openmpi
gdcode hostfile --from hosts.txt --format openmpi --out hostfile.openmpi
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--hosts", metavar="A,B,C",
                     help="comma-separated addresses, coordinator first (each may be host:N)")
    src.add_argument("--from", dest="from_file", metavar="FILE",
                     help="file with one address a line, coordinator first ('#' comments)")
    parser.add_argument("--slots", type=int, default=1, metavar="N",
                        help="ranks per host for hosts that do not give their own (default 1)")
    parser.add_argument("--coordinator-slots", type=int, default=None, metavar="N",
                        help="ranks on the first host (default: --slots)")
    parser.add_argument("--format", choices=hostfile.FORMATS, default="mpich",
                        help="mpich: 'host:N' for mpiexec -f; openmpi: 'host slots=N' for "
                             "mpiexec --hostfile (default mpich)")
    parser.add_argument("--out", metavar="FILE", help="write here instead of printing")


def main(args: argparse.Namespace) -> int:
    if args.hosts is not None:
        entries = [a for a in args.hosts.split(",") if a.strip()]
        origin = "--hosts"
        if not entries:
            raise ConfigError("--hosts: no hosts given; name at least one, e.g. --hosts a,b,c")
    else:
        entries = hostfile.read_addresses(args.from_file)
        origin = f"--from {args.from_file}"
    hosts = hostfile.make_hosts(entries, slots=args.slots,
                                coordinator_slots=args.coordinator_slots, origin=origin)
    if args.out:
        path = hostfile.write_hostfile(args.out, hosts, args.format)
        print(f"wrote {path}: {len(hosts)} host(s), {hostfile.total_slots(hosts)} slot(s)",
              file=sys.stderr)
        print(f"launch: {hostfile.launch_line(args.format, args.out, hosts)}", file=sys.stderr)
    else:
        sys.stdout.write(hostfile.format_hostfile(hosts, args.format))
    return 0
