"""Faults with real processes and real signals: frozen and dead workers, signals to the launcher,
run-directory claims, a full disk, hostile values. Every process a test starts is checked and
cleaned up by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from e2e import E2E_TIMEOUT, run_cli

from gdcode.errors import EXIT_FAILED, EXIT_USAGE, EXIT_WRITE_FAILED
from gdcode.results import load_run

pytestmark = pytest.mark.mpi


class Job:
    """``gdcode run`` started in the background; knows the pids of its ranks once they are up."""

    def __init__(self, tmp_path: Path, name: str, *args: str, env: dict | None = None) -> None:
        """``name`` may be ``--resume``: then the first of ``args`` is the run directory to resume."""
        self.run_dir = Path(args[0]) if name == "--resume" else tmp_path / name
        where = ["--resume", *args[:1]] if name == "--resume" else ["--out", str(tmp_path), "--name", name]
        args = args[1:] if name == "--resume" else args
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "gdcode", "run", *where, "--quiet", *args],
                                     cwd=tmp_path,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.pids: dict[int, int] = {}

    def wait_for(self, lines: int, timeout: float = 60.0) -> None:
        """Wait until ``metrics.jsonl`` has ``lines`` lines (and the ranks' pids are known)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                meta = json.loads((self.run_dir / "metadata.json").read_text())
                pids = (meta.get("resumed") or [meta])[-1]["pids"]  # a resumed run's are its own
                self.pids = {int(r): int(p) for r, p in pids.items()}
                if (self.run_dir / "metrics.jsonl").read_text().count("\n") >= lines:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"{self.run_dir}: fewer than {lines} iterations after {timeout} s")

    def signal(self, rank: int, sig: int) -> None:
        os.kill(self.pids[rank], sig)

    def finish(self, timeout: float = E2E_TIMEOUT) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def processes(self) -> list[int]:
        """The pids of this job's ranks still alive, known or not (their command names the run
        directory; ``metadata.json`` may never have been written)."""
        return [pid for pid in _naming(str(self.run_dir)) if _alive(pid)]

    def cleanup(self) -> list[int]:
        """Kill the launcher and every rank still alive; the pids that were."""
        left = [p for p in {self.proc.pid, *self.pids.values(), *self.processes()} if _alive(p)]
        for pid in left:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        return left


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _naming(text: str) -> list[int]:
    """Pids of the processes whose command line holds ``text`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.fixture
def jobs():
    """Start jobs with ``jobs(tmp_path, name, *args)``; at the end no process of theirs may be left."""
    started: list[Job] = []

    def start(*args, **kwargs) -> Job:
        job = Job(*args, **kwargs)
        started.append(job)
        return job

    yield start
    leftovers = {job.run_dir.name: job.cleanup() for job in started}
    assert not any(leftovers.values()), f"processes left running: {leftovers}"


def _ideal(run_dir: Path, frozen: int, frozen_from: int) -> float:
    """Seconds per iteration the code allows given the live workers' measured compute and injected
    pauses, with worker ``frozen`` (1-based) removed from the decode from iteration ``frozen_from``."""
    from gdcode.bench.engine import ideal_seconds_per_iteration

    return ideal_seconds_per_iteration(run_dir, None, absent={frozen: frozen_from})


# ----------------------------------------------------------------------------- frozen workers

FROZEN_RUN = ["--workers", "3", "--dataset", "synthetic:600x20", "--iterations", "330", "--delay", "exp:0.01",
              "--seed", "3"]


@pytest.mark.parametrize("scheme", [["--scheme", "ignore"], ["--scheme", "frc", "--workers", "4"],
                                    ["--scheme", "cyclic-mds"], ["--scheme", "approx", "--workers", "4"]])
def test_a_frozen_worker_costs_a_tolerant_code_nothing(tmp_path, jobs, scheme):
    job = jobs(tmp_path, "frozen", *FROZEN_RUN, "--stragglers", "1", *scheme,
               "--record-delays", str(tmp_path / "compute.csv"))
    job.wait_for(20)
    job.signal(2, signal.SIGSTOP)
    frozen_at = load_run(job.run_dir).metrics[-1]["iteration"] + 1
    res = job.finish()
    assert res.returncode == 0, res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 330
    assert run.summary["unresponsive_workers"] == [2]
    assert 330 - frozen_at >= 300
    later = [r["status"] for r in run.workers if r["worker"] == 2 and r["iteration"] > frozen_at + 1]
    assert later and set(later) == {"cancelled"}
    per_iteration = run.summary["elapsed"] / run.summary["iterations"]
    # a loose bound: a run that stalls on the frozen worker takes many times longer (the benchmark
    # `gdcode bench faults` measures the ratio to the ideal, about 1.0); plus 3 ms for the
    # coordinator's own overhead an iteration, which the ideal leaves out (1.5-2.2 ms on a 2 GHz
    # Zen 1 VM, gdcode bench engine, where this bound alone once failed at 1.62x)
    assert per_iteration < 1.5 * _ideal(job.run_dir, 2, frozen_at) + 0.003


@pytest.mark.parametrize("mode", ["hogwild", "gossip"])
def test_a_frozen_worker_does_not_stop_the_asynchronous_modes(tmp_path, jobs, mode):
    job = jobs(tmp_path, "frozen", *FROZEN_RUN, "--mode", mode, "--eval-every", "0.05")
    job.wait_for(3)
    job.signal(2, signal.SIGSTOP)
    res = job.finish()
    assert res.returncode == 0, res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "ok" and run.summary["unresponsive_workers"] == [2]
    if mode == "hogwild":
        updates = run.summary["worker_updates"]
        assert updates[0] == updates[2] == 330 and updates[1] < 330
    else:
        assert run.metrics[-1]["workers"] == 2  # the final average holds the two live workers
        assert run.metrics[-1]["iteration"] >= 660


# ----------------------------------------------------------------------------- dead workers

DEAD_RUN = ["--workers", "4", "--stragglers", "1", "--dataset", "synthetic:600x20", "--iterations", "60",
            "--delay", "exp:0.005", "--tolerate-failures"]


def test_a_killed_worker_is_a_permanent_straggler(tmp_path, jobs):
    job = jobs(tmp_path, "dead", *DEAD_RUN, "--scheme", "ignore")
    job.wait_for(10)
    job.signal(3, signal.SIGKILL)
    res = job.finish()
    assert res.returncode == 0, res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 60
    assert run.summary["dead_workers"] == [3]
    statuses = {r["iteration"]: r["status"] for r in run.workers if r["worker"] == 3}
    first_dead = min(t for t, s in statuses.items() if s == "dead")
    assert all(statuses[t] == "dead" for t in range(first_dead, 61))
    assert first_dead < 60  # found within a few iterations of the kill (it was killed after 10)


def test_a_worker_that_raises_is_a_permanent_straggler(tmp_path, jobs):
    job = jobs(tmp_path, "raised", *DEAD_RUN, "--scheme", "frc", env={"GDCODE_FAIL_WORKER": "2:15"})
    res = job.finish()
    assert res.returncode == 0, res.stderr
    assert "failure injected" in res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "ok" and run.summary["dead_workers"] == [2]
    np.testing.assert_array_less(run.column("train_loss")[-1], run.column("train_loss")[0])


def test_a_worker_dead_in_set_up_ends_the_job_at_once(tmp_path, jobs):
    # before the first iteration the ranks are in collectives a dead rank never joins: rank 0
    # finds it by its pid (its roll call) and ends the job, where it used to wait for ever
    job = jobs(tmp_path, "setup", *DEAD_RUN, "--scheme", "ignore", env={"GDCODE_FAIL_WORKER": "3:0"})
    t0 = time.monotonic()
    res = job.finish(timeout=60)
    assert res.returncode == EXIT_FAILED, res.stderr
    assert time.monotonic() - t0 < 30
    assert "failure injected during set-up" in res.stderr
    assert "worker 3 died during set-up, before the first iteration" in res.stderr
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "worker 3 died during set-up" in summary["error"]
    assert job.processes() == []


def test_a_resumed_run_still_finds_its_dead_workers(tmp_path, jobs):
    first = jobs(tmp_path, "again", *DEAD_RUN, "--scheme", "ignore", "--iterations", "20", "--checkpoint-every", "5")
    assert first.finish().returncode == 0
    job = jobs(tmp_path, "--resume", str(first.run_dir), "--iterations", "100000")
    job.wait_for(25)
    job.signal(2, signal.SIGKILL)  # this job's worker 2: the pids of the first run's are gone
    job.wait_for(60)
    job.proc.send_signal(signal.SIGTERM)
    job.finish()
    summary = json.loads((first.run_dir / "summary.json").read_text())
    assert summary["dead_workers"] == [2]


def test_more_deaths_than_the_code_tolerates_fail_the_run(tmp_path, jobs):
    job = jobs(tmp_path, "failed", *DEAD_RUN, "--scheme", "frc")  # groups {1,2}, {3,4}
    job.wait_for(5)
    job.signal(1, signal.SIGKILL)
    job.signal(2, signal.SIGKILL)
    res = job.finish()
    assert res.returncode == EXIT_FAILED, res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "failed" and run.summary["dead_workers"] == [1, 2]
    assert "1, 2" in run.summary["error"]
    assert (job.run_dir / "model.npy").exists()


def test_without_the_flag_a_dead_worker_ends_the_job(tmp_path, jobs):
    job = jobs(tmp_path, "fatal", *[a for a in DEAD_RUN if a != "--tolerate-failures"], "--iterations", "100000")
    job.wait_for(5)
    t0 = time.monotonic()
    job.signal(2, signal.SIGKILL)
    res = job.finish(timeout=30)
    assert res.returncode != 0 and time.monotonic() - t0 < 10


def test_tolerating_failures_is_refused_where_it_cannot_work(tmp_path):
    res = run_cli(["run", "--mode", "gossip", "--tolerate-failures", "--out", str(tmp_path)], cwd=tmp_path)
    assert res.returncode == EXIT_USAGE and "--tolerate-failures" in res.stderr


# ----------------------------------------------------------------------------- process lifetime


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_launcher_ends_the_whole_job(tmp_path, jobs, sig):
    job = jobs(tmp_path, "signalled", "--workers", "3", "--dataset", "synthetic:600x20", "--iterations",
               "100000", "--delay", "exp:0.01")
    job.wait_for(10)
    t0 = time.monotonic()
    job.proc.send_signal(sig)
    res = job.finish(timeout=30)
    assert time.monotonic() - t0 < 5
    assert res.returncode == 128 + sig
    run = load_run(job.run_dir)
    assert run.summary["status"] == "terminated"
    assert run.summary["iterations"] == run.metrics[-1]["iteration"] >= 9  # 10 lines: 0 to 9 at least
    assert not any(_alive(p) for p in job.pids.values())


def test_a_rank_that_outlives_the_signal_is_killed_with_a_tolerant_job(tmp_path, jobs):
    # a tolerant job's hydra leaves its ranks running when it is killed, in sessions of their own
    job = jobs(tmp_path, "stopped", *DEAD_RUN, "--scheme", "ignore", "--iterations", "100000")
    job.wait_for(3)
    job.signal(0, signal.SIGSTOP)  # rank 0 cannot stop the run: the launcher kills the job
    job.proc.send_signal(signal.SIGTERM)
    res = job.finish(timeout=30)
    assert res.returncode == 128 + signal.SIGTERM
    assert not any(_alive(p) for p in job.pids.values()) and job.processes() == []


def test_timeout_with_a_stuck_worker_writes_the_summary_and_the_model(tmp_path, jobs):
    job = jobs(tmp_path, "stuck", "--workers", "2", "--dataset", "synthetic:600x20", "--iterations", "100000",
               "--timeout", "3")
    job.wait_for(5)
    job.signal(1, signal.SIGSTOP)  # uncoded waits for every worker: the run is stuck until --timeout
    res = job.finish(timeout=40)
    assert res.returncode == 3, res.stderr
    run = load_run(job.run_dir)
    assert run.summary["status"] == "timeout" and run.summary["unresponsive_workers"] == [1]
    assert np.load(job.run_dir / "model.npy").shape == (20,)


def test_resume_in_a_config_file_is_refused_before_launch(tmp_path):
    (tmp_path / "c.toml").write_text(f'resume = "{tmp_path / "x"}"\n')
    res = run_cli(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path)], cwd=tmp_path, timeout=60)
    assert res.returncode == EXIT_USAGE and len(res.stderr.splitlines()) == 1


# ----------------------------------------------------------------------------- run directories


def test_two_runs_with_one_name_at_once(tmp_path, jobs):
    first = jobs(tmp_path, "same", "--workers", "2", "--dataset", "synthetic:600x20", "--iterations", "100000",
                 "--delay", "exp:0.01")
    first.wait_for(2)
    res = run_cli(["run", "--workers", "2", "--out", str(tmp_path), "--name", "same"], cwd=tmp_path, timeout=60)
    assert res.returncode == EXIT_USAGE
    before = (first.run_dir / "metrics.jsonl").read_text()
    first.proc.send_signal(signal.SIGTERM)
    first.finish(timeout=30)
    assert (first.run_dir / "metrics.jsonl").read_text().startswith(before)  # nothing overwritten


def test_resume_of_a_running_run_is_refused_and_a_resume_sets_the_old_summary_aside(tmp_path, jobs):
    job = jobs(tmp_path, "ckpt", "--workers", "2", "--dataset", "synthetic:600x20", "--iterations", "100000",
               "--delay", "exp:0.005", "--checkpoint-every", "5")
    job.wait_for(12)
    res = run_cli(["run", "--resume", str(job.run_dir), "--iterations", "200000"], cwd=tmp_path, timeout=60)
    assert res.returncode == EXIT_USAGE and "still running" in res.stderr
    job.proc.send_signal(signal.SIGTERM)
    job.finish(timeout=30)
    old = json.loads((job.run_dir / "summary.json").read_text())
    assert old["status"] == "terminated"
    res = run_cli(["run", "--resume", str(job.run_dir), "--iterations", str(old["iterations"] + 3)],
                  cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads((job.run_dir / "summary.stale.json").read_text()) == old
    assert (job.run_dir / "model.stale.npy").exists()
    assert json.loads((job.run_dir / "summary.json").read_text())["status"] == "ok"


def test_default_names_are_unique_within_a_second(tmp_path):
    from gdcode import rundir
    from gdcode.options import RunOptions

    options = RunOptions(out=str(tmp_path))
    claims = [rundir.claim_new(options) for _ in range(3)]
    names = [c[1].name for c in claims]
    assert len(set(names)) == 3
    for claim, _ in claims:
        claim.release()


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "..", "."])
def test_a_name_is_one_path_component(tmp_path, name):
    res = run_cli(["run", "--workers", "2", "--out", str(tmp_path / "out"), "--name", name], cwd=tmp_path,
                  timeout=60)
    assert res.returncode == EXIT_USAGE and res.stderr.startswith("gdcode run: error: --name")
    assert not (tmp_path / "escape").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_ends_the_run_with_one_line_and_nothing_that_loads_wrong(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        res = run_cli(["run", "--workers", "2", "--dataset", "synthetic:600x20", "--iterations", "100000",
                       "--out", str(disk), "--name", "full", "--quiet"], cwd=tmp_path, timeout=120)
        assert res.returncode == EXIT_WRITE_FAILED, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("gdcode run: error:")]
        assert len(errors) == 1 and "No space left" in errors[0], res.stderr
        run = load_run(disk / "full")  # every complete line reads back
        assert len(run.metrics) > 10 and run.summary is None
        assert not (disk / "full" / "model.npy").exists()
        assert not list((disk / "full").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_bench_engine_schemes_at_scale_use_codes_that_exist():
    """S = W/6, and frc/approx take the largest S' <= W/6 with S'+1 dividing W."""
    from gdcode.bench.engine import delay_schemes, straggler_counts

    assert straggler_counts(6) == (1, 1)
    assert straggler_counts(24) == (4, 3)
    assert straggler_counts(48) == (8, 7)
    assert straggler_counts(4) == (1, 1)
    labels = [label for label, _ in delay_schemes(48)]
    assert labels == ["uncoded", "ignore S=8", "frc S=7", "cyclic-mds S=8", "approx S=7 collect=24"]


@pytest.mark.parametrize("argv", [["--workers", "1"], ["--iterations", "0"]])
def test_bench_engine_bad_options_exit_2(argv, capsys):
    from gdcode import cli

    assert cli.main(["bench", "engine", *argv]) == 2
    assert "must be at least" in capsys.readouterr().err
