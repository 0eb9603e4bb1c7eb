"""``gdcode hostfile``: contents and order of MPICH and Open MPI hostfiles, and the examples."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gdcode.cli import main
from gdcode.cluster import hostfile
from gdcode.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_mpich_and_openmpi_lines_keep_the_coordinator_first(tmp_path, capsys):
    assert main(["hostfile", "--hosts", "coord,w1,w2", "--slots", "2", "--coordinator-slots",
                 "1", "--format", "mpich"]) == 0
    assert _body(capsys.readouterr().out) == ["coord:1", "w1:2", "w2:2"]
    out = tmp_path / "h.openmpi"
    assert main(["hostfile", "--hosts", "coord,w1,w2", "--slots", "3", "--format", "openmpi",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert _body(text) == ["coord slots=3", "w1 slots=3", "w2 slots=3"]
    assert f"mpiexec --hostfile {out} -n 9 python -m mpi4py -m gdcode run --workers 8" in text


def test_from_file_reads_addresses_comments_and_either_format(tmp_path, capsys):
    src = tmp_path / "hosts.txt"
    src.write_text("# coordinator first\n10.0.0.9\n\n10.0.0.2:4  # own slots\n"
                   "10.0.0.3 slots=2\n10.0.0.1\n")
    assert main(["hostfile", "--from", str(src), "--slots", "1", "--format", "openmpi"]) == 0
    assert _body(capsys.readouterr().out) == [
        "10.0.0.9 slots=1", "10.0.0.2 slots=4", "10.0.0.3 slots=2", "10.0.0.1 slots=1"]


def test_total_slots_and_launch_line_count_ranks():
    hosts = hostfile.make_hosts(["a", "b:3"], slots=2, coordinator_slots=1)
    assert hosts == [hostfile.Host("a", 1), hostfile.Host("b", 3)]
    assert hostfile.total_slots(hosts) == 4
    text = hostfile.format_hostfile(hosts, "mpich", "hf")
    assert "mpiexec -f hf -n 4 python -m mpi4py -m gdcode run --workers 3" in text
    assert 'MPIEXEC_ARGS="-f hf" gdcode run --workers 3' in text


@pytest.mark.parametrize("argv, message", [
    (["--hosts", "a,b,a"], "listed twice"),
    (["--hosts", ","], "no hosts"),
    (["--hosts", "a b"], "cannot read host entry"),
    (["--hosts", "user@a"], "not a host name"),
    (["--hosts", "a", "--slots", "0"], "at least 1"),
    (["--hosts", "a:x"], "not a whole number"),
    (["--from", "/nonexistent/hosts.txt"], "no such file"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(["hostfile", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_format_is_refused():
    with pytest.raises(ConfigError, match="choose one of mpich, openmpi"):
        hostfile.format_hostfile([hostfile.Host("a")], "slurm")


@pytest.mark.parametrize("fmt", hostfile.FORMATS)
def test_examples_are_what_the_command_writes(fmt):
    path = f"hostfiles/localhost.{fmt}"
    expected = hostfile.format_hostfile([hostfile.Host("localhost", 5)], fmt, path)
    assert (REPO / path).read_text() == expected
    assert "-n 5 python -m mpi4py -m gdcode run --workers 4" in expected


def test_mpich_accepts_the_hostfile_with_its_comments(tmp_path):
    """Hydra reads the header comments and places the ranks on the listed hosts."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True)
    if "HYDRA" not in version.stdout:
        pytest.skip("mpiexec is not MPICH's Hydra")
    path = tmp_path / "hf"
    hostfile.write_hostfile(path, hostfile.make_hosts(["localhost:1", "127.0.0.1:2"]), "mpich")
    res = subprocess.run([mpiexec, "-f", str(path), "-n", "3", sys.executable, "-c",
                          "import os; print(os.environ['PMI_RANK'])"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert sorted("".join(res.stdout.split())) == ["0", "1", "2"]  # hydra may run two ranks' lines together
