"""The coordinator overhead of the leanest synchronous loop in Python: a floor for gdcode's own.

Run under MPI with W + 1 ranks (``mpiexec -n 5 python -m gdcode.runtime.floor``, the W = 4 of
``gdcode bench engine``'s overhead run, which runs it too). Rank 0 sends a 100-value model to
every worker and rings its doorbell, waits for every reply (asleep on its own doorbell, or
yielding its core with ``--wait yield``; ``--yield-us US`` yields for the first US microseconds
of each wait, then sleeps) and takes a step; each worker holds 1000 dense rows (4000x100 over 4
workers), computes the logistic gradient with numpy and replies. Nothing else: no run
directory, no codes, no delays, no records. It prints the elapsed time per iteration, the
slowest worker's mean compute, and their difference, the overhead as the bench defines it
(``--json``: the three in seconds, as one JSON object).

``tools/overhead_floor.c`` is the same loop in C (``make overhead-floor`` builds and runs
both): what compiled per-message code would reach on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from gdcode.runtime.launch import one_blas_thread_per_rank

D, ROWS = 100, 1000
MODEL, REPLY, STOP = 0, 1, 2
#: a test of a request (or a probe) may progress MPI without completing it: tests in a row before sleeping
TESTS = 3


def main(argv: list[str] | None = None) -> None:
    """Run this rank's part of the loop (rank 0 coordinates, the others are workers).

    Parameters
    ----------
    argv : list of str, optional
        The options (default: the command line's).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--wait", choices=["sleep", "yield"], default="sleep",
                        help="sleep on the doorbell (gdcode's way), or yield the core and test again (spins)")
    parser.add_argument("--yield-us", type=float, default=0.0,
                        help="with --wait sleep: yield the core for the first US microseconds of each wait first")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.yield_us < 0:
        parser.error("give --iterations >= 1 and --yield-us >= 0")
    one_blas_thread_per_rank()  # as gdcode's ranks do, before numpy loads
    import numpy as np
    from mpi4py import MPI

    from gdcode.runtime.doorbell import connect

    comm = MPI.COMM_WORLD
    rank, W = comm.Get_rank(), comm.Get_size() - 1
    bell = connect(comm)
    if bell is None:
        raise SystemExit("gdcode.runtime.floor: every rank must be on this host (no doorbell)")

    window, wait_from = args.yield_us * 1e-6, [0.0]

    def wait() -> None:
        if args.wait == "yield" or time.perf_counter() - wait_from[0] < window:
            os.sched_yield()
            bell.drain()
        else:
            bell.wait(0.02)  # until rung, taking the bytes that came

    if rank == 0:
        w = np.zeros(D)
        replies = [np.empty(D) for _ in range(W)]
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            recvs = [comm.Irecv(replies[i], source=i + 1, tag=REPLY) for i in range(W)]
            sends = [comm.Isend(w, dest=i + 1, tag=MODEL) for i in range(W)]
            bell.ring_all(range(1, W + 1))
            wait_from[0] = time.perf_counter()
            done = 0
            while done < W:
                bell.drain()
                came = sum(len(MPI.Request.Testsome(recvs) or ()) for _ in range(TESTS))
                done += came
                if not came and done < W:
                    wait()
            MPI.Request.Waitall(sends)
            w -= 1e-6 * np.sum(replies, axis=0)
        elapsed = (time.perf_counter() - t0) / args.iterations
        for i in range(W):
            comm.Send(w, dest=i + 1, tag=STOP)
            bell.ring(i + 1)
        gathered = comm.gather(0.0, root=0)  # each worker's mean compute
        assert gathered is not None
        compute = max(gathered[1:])
        if args.json:
            print(json.dumps({"workers": W, "wait": args.wait, "yield_us": args.yield_us,
                              "seconds_per_iteration": elapsed, "compute_seconds": compute,
                              "overhead_seconds_per_iteration": elapsed - compute}))
        else:
            print(f"python W={W} wait={args.wait} yield-us={args.yield_us:.0f}: {elapsed * 1e3:.3f} ms per iteration, "
                  f"slowest worker's compute {compute * 1e3:.3f} ms, overhead {(elapsed - compute) * 1e3:.3f} ms")
    else:
        rng = np.random.default_rng(rank)
        X, y = rng.standard_normal((ROWS, D)), (rng.random(ROWS) < 0.5).astype(float)
        w, grad = np.empty(D), np.empty(D)
        comm.Barrier()
        spent, n = 0.0, 0
        status = MPI.Status()
        while True:
            bell.drain()
            while not any(comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status) for _ in range(TESTS)):
                wait()
            comm.Recv(w, source=0, tag=status.Get_tag())
            if status.Get_tag() == STOP:
                break
            c0 = time.perf_counter()
            np.dot(X.T, 1.0 / (1.0 + np.exp(-(X @ w))) - y, out=grad)
            spent, n = spent + time.perf_counter() - c0, n + 1
            comm.Send(grad, dest=0, tag=REPLY)  # 800 bytes go eagerly: the send does not wait for rank 0
            bell.ring(0)
            wait_from[0] = time.perf_counter()
        comm.gather(spent / max(n, 1), root=0)
    bell.close()


if __name__ == "__main__":
    main()
