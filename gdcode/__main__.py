"""``python -m gdcode``: the same as the ``gdcode`` console script."""

import sys

from gdcode.cli import main


def _exit(code: int) -> None:
    """Exit with ``code``; inside an MPI job, finalise first so that a failure rank 0 reports
    (bad input, timeout) ends the job with its code, without mpi4py's abort. Rank 0 leaves
    last: the launcher would otherwise kill the ranks still exiting and report a signal."""
    mpi = sys.modules.get("mpi4py.MPI")
    if code and mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        import os
        import time

        mpi.Finalize()
        time.sleep(0.3)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
