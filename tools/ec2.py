#!/usr/bin/env python3
"""EC2 cluster tool for gdcode, the same as ``gdcode ec2``.

Launch line:  python tools/ec2.py launch --config tools/ec2.example.toml --dry-run
Actions: launch, status, hosts, setup, run -- COMMAND, collect, terminate (see --help).
"""

import sys

from gdcode.cli import main

if __name__ == "__main__":
    sys.exit(main(["ec2", *sys.argv[1:]]))
