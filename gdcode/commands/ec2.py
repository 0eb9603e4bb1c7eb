"""Launch, inspect, set up and tear down an EC2 cluster: ``gdcode ec2 ACTION --config FILE``.

ACTION: launch, status, hosts, setup, run -- COMMAND, collect, terminate. ``--dry-run``
prints the AWS API calls instead of making them (setup: lists the files it would send). The
same tool is ``tools/ec2.py``; the config keys are described in ``tools/ec2.example.toml``.
A cluster is its name and the id that launch records locally; without that record, pass
--cluster-id ID. run, setup and collect with --hosts FILE need no config. Needs boto3
(``pip install 'gdcode[ec2]'``). Exit codes: 0 done, 1 AWS or a host refused or failed,
2 bad input.
"""

from gdcode.cluster.ec2 import add_arguments, main

#: the Examples section of the help page
EXAMPLES = """\
gdcode ec2 launch --config ec2.toml
gdcode ec2 setup --config ec2.toml
gdcode ec2 run --config ec2.toml -- .venv/bin/gdcode info
gdcode ec2 run --hosts hosts.txt -- .venv/bin/gdcode info     # a hosts file needs no config
gdcode ec2 collect --hosts hosts.txt --out cluster-results
gdcode ec2 terminate --config ec2.toml --yes --wait
"""

__all__ = ["add_arguments", "main"]
