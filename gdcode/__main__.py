"""``python -m gdcode``: the same as the ``gdcode`` console script."""

import sys

from gdcode.runtime.launch import one_blas_thread_per_rank

one_blas_thread_per_rank()  # before anything loads numpy

from gdcode.cli import main  # noqa: E402


def _exit(code: int) -> None:
    """Exit with ``code``; inside an MPI job, finalise MPI first.

    A failure rank 0 reports (bad input, timeout) then ends the job with its code, without
    mpi4py's abort; rank 0 leaves last (the launcher would otherwise kill the ranks still
    exiting and report a signal). A rank that succeeded leaves through the C library's
    ``exit`` right after ``MPI_Finalize``: Python's own teardown (collecting every module of
    numpy and gdcode) would cost each rank tens of milliseconds at the end of every run, and
    ``os._exit`` would skip the C exit handlers in which MPICH's process manager interface
    says goodbye (hydra then takes the closed connection for a crash and kills the job). The
    run's files are closed or line-buffered by then; the standard streams are flushed here.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        import os
        import time

        mpi.Finalize()
        sys.stdout.flush()
        sys.stderr.flush()
        if code:
            time.sleep(0.3)
            os._exit(code)
        try:
            import ctypes

            ctypes.CDLL(None).exit(0)
        except (OSError, AttributeError):  # no C library to call: Python's own exit
            pass
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
