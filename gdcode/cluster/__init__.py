"""Running gdcode on several hosts: hostfiles, commands over SSH, and an EC2 cluster tool.

- :mod:`gdcode.cluster.hostfile`: hostfiles for MPICH (Hydra) and Open MPI, coordinator first;
- :mod:`gdcode.cluster.remote`: run a command on every host over SSH in parallel, install
  gdcode on every host, fetch run directories;
- :mod:`gdcode.cluster.ec2config` and :mod:`gdcode.cluster.ec2`: the EC2 launch tool
  (``gdcode ec2`` and ``tools/ec2.py``).

Nothing here imports MPI; boto3 is imported only inside the EC2 code paths.
"""


class ClusterError(RuntimeError):
    """A failure on the cluster or in AWS (not bad input): the command exits 1 with this message."""
