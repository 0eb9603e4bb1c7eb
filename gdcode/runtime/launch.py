"""Starting the MPI job: detecting whether we are inside one, and launching ourselves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gdcode.errors import EXIT_DIVERGED, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, ConfigError, OptionError
from gdcode.procfs import start_time, stat_fields

# Environment variables that MPICH (Hydra), Open MPI, PMIx and Slurm set in every rank.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def in_mpi_job() -> bool:
    """True when this process was started by an MPI launcher (checked without initialising MPI)."""
    return any(var in os.environ for var in _MPI_ENV)


#: The thread count of the BLAS that numpy's and scipy's wheels load (OpenBLAS).
BLAS_THREADS_VAR = "OPENBLAS_NUM_THREADS"


def one_blas_thread_per_rank() -> None:
    """In an MPI rank, set ``OPENBLAS_NUM_THREADS=1`` unless the user set it; call before numpy loads.

    Ranks share the cores and compute with one thread each (the models' ``n_threads``), but
    OpenBLAS starts a thread per core as numpy loads and they spin on start-up: 0.12 s of CPU
    per process on a 2-core machine, a tenth of a W=4 run's start-up with five ranks on two
    cores. A value the user set (several BLAS threads for a rank alone on a large host) is kept.
    """
    if in_mpi_job():
        os.environ.setdefault(BLAS_THREADS_VAR, "1")


def find_mpiexec() -> str:
    """The launcher: ``$MPIEXEC``, else ``mpiexec`` beside this Python (the venv's MPI wheel), else PATH."""
    env = os.environ.get("MPIEXEC")
    if env:
        return env
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise ConfigError("no mpiexec found: install the MPI wheel (`pip install mpich`) or set MPIEXEC")
    return found


def launch_command(n_ranks: int, argv: list[str], extra_mpiexec_args: list[str] | None = None,
                   tolerate_failures: bool = False) -> list[str]:
    """``mpiexec -n N python -m mpi4py -m gdcode ARGV...``; ``$MPIEXEC_ARGS`` adds launcher options.

    With ``tolerate_failures`` a rank that dies must not end the job, and under MPICH's hydra
    (measured with the wheel) three things end it otherwise: hydra's clean-up (off with
    ``-disable-auto-cleanup``), a rank killed by a signal (hydra then SIGKILLs every rank,
    whatever the clean-up setting; a shell between hydra and Python turns the death into a
    plain exit status) and the SIGUSR1 hydra sends the others when one exits (ignored, and the
    ignoring is inherited by Python). The ranks then run without ``-m mpi4py``, whose abort on
    an exception would end the job: a worker that raises exits on its own.
    """
    extra = list(extra_mpiexec_args or []) + os.environ.get("MPIEXEC_ARGS", "").split()
    if not tolerate_failures:
        return [find_mpiexec(), "-n", str(n_ranks), *extra, sys.executable, "-u", "-m", "mpi4py", "-m",
                "gdcode", *argv]
    wrapper = 'trap "" USR1; "$0" "$@"; exit $?'
    return [find_mpiexec(), "-disable-auto-cleanup", "-n", str(n_ranks), *extra, "sh", "-c", wrapper,
            sys.executable, "-u", "-m", "gdcode", *argv]


def check_tolerant_launcher(option: str = "tolerate_failures", value: object = True) -> None:
    """Refuse ``--tolerate-failures`` (or ``option``) unless the launcher is MPICH's hydra (see
    :func:`launch_command`; ``--cluster`` needs hydra's ssh launcher too).

    Raises
    ------
    OptionError
        Naming ``option``.
    """
    mpiexec = find_mpiexec()
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    if "HYDRA" not in version:
        raise OptionError(option, value, f"needs MPICH's hydra launcher (the mpich wheel); {mpiexec} is not hydra")


#: seconds the launcher gives rank 0 to stop the run after a signal, before it kills the job
STOP_GRACE = 4.0
#: the signals the launcher forwards to rank 0 (Ctrl-C included: the ranks run in their own session)
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
#: exit code for each summary status (a terminated run exits with 128 + the signal's number)
STATUS_CODES = {"ok": EXIT_OK, "timeout": EXIT_TIMEOUT, "failed": EXIT_FAILED, "diverged": EXIT_DIVERGED}


def launch(n_ranks: int, argv: list[str], timeout: float | None = None, run_dir: Path | None = None,
           tolerate_failures: bool = False, mpiexec_args: Sequence[str] = (),
           env: Mapping[str, str] | None = None) -> int:
    """Run ``gdcode ARGV`` on ``n_ranks`` ranks and return the run's exit code.

    The job runs in its own session. SIGTERM, SIGHUP and SIGINT to the launcher are forwarded
    to rank 0 as SIGTERM (its pid is in ``RUN_DIR/metadata.json``), which ends the run with
    status ``terminated``; a job still alive :data:`STOP_GRACE` seconds later, or one that
    outlives ``timeout`` by 30 s, is killed. The exit code follows the status ``summary.json``
    reports when this job wrote one, else mpiexec's.

    ``mpiexec_args`` and ``env`` are added to mpiexec's options and environment (an emulated
    cluster's :class:`gdcode.cluster.emulate.LaunchSpec`; rank 0 then runs under hydra's ssh
    launcher, ``ip netns exec``, still a child of hydra's proxy, in this pid namespace).
    """
    cmd = launch_command(n_ranks, argv, list(mpiexec_args), tolerate_failures=tolerate_failures)
    job_env = {**os.environ, **(env or {})}
    if tolerate_failures:  # MPI_Finalize would otherwise wait for a dead rank for ever
        job_env["MPIR_CVAR_NO_COLLECTIVE_FINALIZE"] = "1"
    started = time.time()
    log = _Tee(run_dir / LOG_FILE) if run_dir is not None else None
    proc = subprocess.Popen(cmd, start_new_session=True, env=job_env,
                            stderr=subprocess.PIPE if log is not None else None)
    if log is not None:
        assert proc.stderr is not None
        log.start(proc.stderr)
    signalled: list[int] = []
    first_signal = 0.0

    def forward(signum: int, frame: object) -> None:
        nonlocal first_signal
        if not signalled:
            first_signal = time.monotonic()
            _stop_rank0(proc, run_dir)
        signalled.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    limit = None if timeout is None else time.monotonic() + timeout + 30.0
    # A thread blocks in waitpid and sets ``ended`` as mpiexec ends; Popen.wait(timeout) would
    # poll every 50 ms instead, and the run's end would reach the caller 25 ms late on average.
    ended = threading.Event()

    def reap() -> None:
        proc.wait()
        ended.set()

    threading.Thread(target=reap, daemon=True).start()
    try:
        while True:
            if ended.wait(0.1):  # a signal's handler still runs at once
                code = proc.returncode
                break
            if signalled and time.monotonic() - first_signal > STOP_GRACE:
                code = end_job(proc)
                break
            if limit is not None and time.monotonic() > limit:
                print(f"gdcode: error: the MPI job outlived --timeout {timeout:g} s by 30 s; killing it",
                      file=sys.stderr)
                return end_job(proc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if log is not None:
            log.close()
    return _outcome(code, run_dir, started, signalled)


#: every rank's standard error, as the launcher passed it on to the terminal
LOG_FILE = "ranks.log"


class _Tee:
    """Copy the job's standard error to this process's and to ``ranks.log``, as it comes.

    The terminal gets every byte at once (the progress line redraws with carriage returns); the
    log gets whole lines, a redrawn line as its last state.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: threading.Thread | None = None

    def start(self, stream: Any) -> None:
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: Any) -> None:
        out = getattr(sys.stderr, "buffer", None)
        pending = b""
        try:
            fh = self.path.open("ab")
        except OSError:
            fh = None
        with stream:
            while True:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    break
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    sys.stderr.write(chunk.decode(errors="replace"))
                if fh is not None:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        fh.write(line.rsplit(b"\r", 1)[-1] + b"\n")
                    try:
                        fh.flush()
                    except OSError:
                        fh = None  # a full disk: the terminal still gets everything
        if fh is not None:
            if pending:
                fh.write(pending.rsplit(b"\r", 1)[-1] + b"\n")
            fh.close()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5)


def _stop_rank0(proc: subprocess.Popen, run_dir: Path | None) -> None:
    """SIGTERM to rank 0 when it runs here (it writes ``summary.json``), else to the whole job."""
    pid = _rank0_pid(run_dir)
    try:
        if pid is not None and _descends_from(pid, proc.pid):
            os.kill(pid, signal.SIGTERM)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _descends_from(pid: int, ancestor: int, depth: int = 4) -> bool:
    """Whether ``ancestor`` is among the first ``depth`` ancestors of ``pid`` (hydra starts each
    rank under its proxy, in a session of its own; a tolerant launch adds a shell)."""
    for _ in range(depth):
        fields = stat_fields(pid)
        if fields is None:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
    return False


def _descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (Linux ``/proc``; elsewhere none), with its start time: the
    ranks run in sessions of their own, out of reach of a signal to mpiexec's process group."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and len(fields) > 19:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = started[pid]
        todo += children.get(pid, [])
    return found


def _rank0_pid(run_dir: Path | None) -> int | None:
    if run_dir is None:
        return None
    try:
        meta = json.loads((run_dir / "metadata.json").read_text())
        return int((meta.get("resumed") or [meta])[-1]["pids"]["0"])  # this job's: a resume's own
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _outcome(code: int, run_dir: Path | None, started: float, signalled: list[int]) -> int:
    """The run's exit code: from the status of a ``summary.json`` this job wrote, else mpiexec's."""
    summary = None if run_dir is None else run_dir / "summary.json"
    if summary is not None and summary.exists() and summary.stat().st_mtime >= started - 1.0:
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, ValueError):
            status = None
        if status == "terminated":
            return 128 + int(signalled[0] if signalled else signal.SIGTERM)
        if status in STATUS_CODES:
            return STATUS_CODES[status]
    if signalled:
        return 128 + int(signalled[0])
    return code


def end_job(proc: subprocess.Popen) -> int:
    """End the job of ``proc``, an mpiexec started in its own session: SIGTERM to its process
    group, SIGKILL a second later, then SIGKILL to every process that was below mpiexec and
    still is the same process (a tolerant launch's hydra leaves its ranks running when it goes,
    and a rank stopped or stuck in MPI outlives SIGTERM). Returns 124, the exit code of a job
    timed out."""
    job = _descendants(proc.pid)  # before mpiexec goes: its ranks then lose their parent
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=1)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for pid, started in job.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 124
