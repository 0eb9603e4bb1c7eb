"""Packaging and first contact: the licence, the help pages, the example config, the extras,
and a built wheel and sdist that install and run in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from e2e import run_cli

from gdcode import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: every subcommand whose help page must have examples and no reST markup
SUBCOMMANDS = ("run", "prepare", "simulate", "plot", "codes", "bench", "hostfile", "ec2", "info", "cluster",
               "trace")
REST = re.compile(r"``|:[a-z]+:`")


def test_the_licence_file_matches_the_declared_licence():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert "LICENSE" in PYPROJECT["project"]["license-files"]
    assert text.startswith("BSD 3-Clause License") and "the gdcode developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause


def test_every_subcommand_is_checked_here():
    assert set(SUBCOMMANDS) == set(cli.SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_pages_have_examples_and_no_rest_markup(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    page = capsys.readouterr().out
    assert "\nExamples:\n" in page
    assert f"gdcode {command}" in page.split("\nExamples:\n", 1)[1]
    assert not REST.findall(page), REST.findall(page)


def _sub_parsers(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _sub_parsers(sub, (*prefix, name))


def test_no_help_page_of_any_depth_has_rest_markup():
    pages = dict(_sub_parsers(cli.build_parser()))
    assert ("cluster", "up") in pages and ("bench", "kernels") in pages and ("ec2", "collect") in pages
    for path, parser in pages.items():
        assert not REST.findall(parser.format_help()), path


def test_cli_plain_strips_rest():
    assert cli.plain("see ``gdcode run`` and :func:`~gdcode.plot.plot_metric` or :mod:`gdcode.data`") == \
        "see gdcode run and plot_metric or gdcode.data"


def test_extras_name_what_each_part_needs():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {k: {re.split(r"[<>=\[;]", d)[0] for d in v} for k, v in extras.items()}
    assert names["analysis"] == {"pandas"} and "matplotlib" in names["plot"]
    assert {"jupytext", "papermill", "ipykernel", "pandas"} <= names["notebook"]
    # make test installs what the tests need
    assert names["notebook"] | names["analysis"] | names["plot"] | {"build"} <= names["test"]


@pytest.mark.mpi
def test_the_example_run_config_runs(tmp_path):
    res = run_cli(["run", str(ROOT / "experiments" / "run-example.toml"), "--iterations", "3", "--out",
                   str(tmp_path), "--name", "example", "--quiet"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "example" / "summary.json").read_text())
    options = json.loads((tmp_path / "example" / "options.json").read_text())["options"]
    assert summary["status"] == "ok" and summary["iterations"] == 3
    assert options["scheme"] == "cyclic-mds" and options["workers"] == 4 and options["delay"] == "exp:0.05"


@pytest.mark.build
@pytest.mark.mpi
def test_wheel_and_sdist_build_install_and_run_in_a_fresh_venv(tmp_path):
    """python -m build makes the sdist in an isolated environment (so build-system.requires must be
    complete), pip builds the wheel from the sdist (what pip does with an sdist; with this venv's build
    tools, to spare a second isolated environment); the wheel goes into a fresh venv (pip's cache
    reused), where gdcode info and a small run work."""
    import tarfile

    pytest.importorskip("build", reason="the build package is missing: pip install 'gdcode[test]'")
    if not (ROOT / ".git").exists():
        pytest.skip("the sdist is made from the git checkout (meson dist); this tree is not one")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPIEXEC")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dist = tmp_path / "dist"
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(ROOT)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # unoptimised kernels: a third of the compile time, and optimisation is not what this tests
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                          "--no-build-isolation", "-Csetup-args=-Doptimization=0", "-w", str(dist),
                          *map(str, dist.glob("gdcode-*.tar.gz"))],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    wheels, sdists = list(dist.glob("gdcode-*.whl")), list(dist.glob("gdcode-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    with tarfile.open(sdists[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "meson.build", "kernels/meson.build",
            "gdcode/__init__.py"} <= names
    home = tmp_path / "fresh"
    venv.create(home / "venv", with_pip=True)
    bin_dir = home / "venv" / "bin"
    clean = dict(env, PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")  # nothing of this checkout's venv
    # --no-compile: byte-compiling scipy's and scikit-learn's thousands of modules took 17 of the 26 s
    res = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                          "--no-compile", str(wheels[0])], capture_output=True, text=True, env=clean, timeout=900,
                         cwd=home)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = subprocess.run([str(bin_dir / "gdcode"), "info", "--json"], capture_output=True, text=True, env=clean,
                         timeout=120, cwd=home)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["compiled_kernels"] is True and info["mpiexec"] == str(bin_dir / "mpiexec")
    res = subprocess.run([str(bin_dir / "gdcode"), "run", "--workers", "2", "--iterations", "3", "--dataset",
                          "synthetic:300x5", "--delay", "exp:0.01", "--out", "results", "--name", "small", "--quiet"],
                         capture_output=True, text=True, env=clean, timeout=180, cwd=home)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((home / "results" / "small" / "summary.json").read_text())["status"] == "ok"
    shown = subprocess.run([str(bin_dir / "python"), "-c", "import gdcode; print(gdcode.__file__)"],
                           capture_output=True, text=True, env=clean, cwd=home).stdout
    assert str(home / "venv") in shown  # the installed package ran, not this checkout
