"""Commands on many hosts over SSH: run in parallel, install gdcode, fetch run directories.

The ssh program is configurable (``ssh_command`` in the cluster config, ``--ssh`` or
``$GDCODE_SSH``): it is called as ``SSH [OPTIONS] [-i KEY] [USER@]HOST COMMAND`` exactly like
OpenSSH, so any stand-in with that calling convention works (the tests use one that runs
the command locally).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from gdcode.cluster import ClusterError
from gdcode.cluster.ec2config import SetupSettings
from gdcode.errors import ConfigError

#: exit code reported for a host whose command outlived the timeout
TIMEOUT_EXIT = 124


@dataclasses.dataclass(frozen=True)
class SSH:
    """How to reach the hosts: the ssh program, its options, user and key."""

    command: tuple[str, ...] = ("ssh",)
    options: tuple[str, ...] = ()
    user: str | None = None
    identity_file: str | None = None

    def argv(self, host: str, remote_command: str) -> list[str]:
        """The command line that runs ``remote_command`` (a shell string) on ``host``."""
        argv = [*self.command, *self.options]
        if self.identity_file:
            argv += ["-i", os.path.expanduser(self.identity_file)]
        argv.append(f"{self.user}@{host}" if self.user else host)
        argv.append(remote_command)
        return argv


@dataclasses.dataclass(frozen=True)
class HostResult:
    """What one host's command did."""

    host: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def sh_path(path: str) -> str:
    """A remote path as a shell word, with a leading ``~`` meaning the remote ``$HOME``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def run_on_hosts(ssh: SSH, hosts: Sequence[str], command: str, timeout: float,
                 stdin: bytes | None = None, max_parallel: int = 64) -> list[HostResult]:
    """Run a shell command on every host at once and wait for all of them.

    Parameters
    ----------
    ssh : SSH
        How to reach the hosts.
    hosts : sequence of str
        Addresses; results come back in this order.
    command : str
        A shell command line, run by each host's login shell as ssh does.
    timeout : float
        Seconds each host may take; a host that takes longer has its ssh killed and is
        reported with exit code :data:`TIMEOUT_EXIT`.
    stdin : bytes, optional
        Fed to every host's command on standard input.
    max_parallel : int
        At most this many ssh processes at once.

    Returns
    -------
    list of HostResult
    """
    if not hosts:
        raise ClusterError("no hosts to run on")
    with ThreadPoolExecutor(max_workers=min(max_parallel, len(hosts))) as pool:
        futures = [pool.submit(_run_one, ssh, h, command, timeout, stdin) for h in hosts]
        return [f.result() for f in futures]


def _run_one(ssh: SSH, host: str, command: str, timeout: float,
             stdin: bytes | None) -> HostResult:
    argv = ssh.argv(host, command)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise ConfigError(f"ssh command {argv[0]!r} not found; install OpenSSH or set "
                          "ssh_command / --ssh / GDCODE_SSH") from None
    try:
        out, err = proc.communicate(input=stdin, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    return HostResult(host=host, returncode=TIMEOUT_EXIT if timed_out else proc.returncode,
                      stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                      seconds=time.monotonic() - start, timed_out=timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def report(results: Sequence[HostResult], out: TextIO | None = None, what: str = "command",
           show_output: bool = True) -> int:
    """Print each host's output and exit code; return 0 if every host exited 0, else 1.

    Parameters
    ----------
    results : sequence of HostResult
    out : text stream, optional
        Where to print (default standard output).
    what : str
        Name of what ran, for the summary line.
    show_output : bool
        Print each host's standard output and error before the summary.
    """
    out = out or sys.stdout
    if show_output:
        for r in results:
            print(f"==> {r.host} <==", file=out)
            if r.stdout:
                out.write(r.stdout if r.stdout.endswith("\n") else r.stdout + "\n")
            if r.stderr:
                for line in r.stderr.splitlines():
                    print(f"[stderr] {line}", file=out)
    width = max(len(r.host) for r in results)
    print(f"{'host':<{width}}  exit  seconds", file=out)
    for r in results:
        code = f"{r.returncode}" + (" (timeout)" if r.timed_out else "")
        print(f"{r.host:<{width}}  {code:<4}  {r.seconds:7.1f}", file=out)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        print(f"{what} failed on {len(failed)} of {len(results)} host(s): "
              f"{', '.join(r.host for r in failed)}", file=out)
        return 1
    print(f"{what} succeeded on all {len(results)} host(s)", file=out)
    return 0


def with_venv_path(command: str, venv: str) -> str:
    """``command`` with the cluster's virtual environment first on ``PATH``."""
    return f"PATH={sh_path(venv)}/bin:\"$PATH\"; export PATH; {command}"


# --- setup: install gdcode into the same virtual environment on every host -----------------

def default_source() -> Path:
    """The checkout this gdcode was imported from (the directory holding pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError("gdcode is not running from a source checkout; give --source DIR "
                          "or --git URL")
    return root


#: top-level files shipped from a source tree that is not a git checkout (those that exist)
MANIFEST_FILES = ("pyproject.toml", "meson.build", "meson.options", "Makefile", "README.md",
                  "LICENSE", "LICENSE.txt", "PKG-INFO")
#: top-level directories shipped, whole but for caches and build products, from a source
#: tree that is not a git checkout: the package, its kernels, the experiments, the dataset
#: scripts, the tools and the example hostfiles (not tests/, results or anything else)
MANIFEST_DIRS = ("gdcode", "kernels", "experiments", "data_prepare", "tools", "hostfiles")
# never shipped from a manifest directory: caches and build products
_SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache",
              ".ruff_cache", ".mypy_cache", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".o")

#: Names of credential-looking files, never shipped even when tracked by git or inside a
#: manifest directory: ``(pattern, what such a file usually is)``. A pattern is matched,
#: without regard to case, against every component of a file's path, so a file inside a
#: directory of such a name (``.aws/config``, ``secrets/token``) is held back too.
CREDENTIAL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("*.pem", "a private key or certificate (EC2 key pairs are .pem files)"),
    ("*.key", "a private key"),
    ("*.p12", "a key store"),
    ("*.pfx", "a key store"),
    ("*.jks", "a Java key store"),
    ("*.keystore", "a key store"),
    ("*.ppk", "a PuTTY private key"),
    ("*.kdbx", "a password database"),
    ("id_rsa*", "an ssh key"),
    ("id_dsa*", "an ssh key"),
    ("id_ecdsa*", "an ssh key"),
    ("id_ed25519*", "an ssh key"),
    (".ssh", "ssh keys and settings"),
    (".aws", "AWS credentials and profiles"),
    (".gnupg", "GnuPG keys"),
    (".env", "environment variables, often secrets"),
    (".env.*", "environment variables, often secrets"),
    ("ec2.toml", "the user's cluster config (tools/ec2.example.toml is shipped)"),
    ("*credentials*", "credentials"),
    ("*secret*", "secrets"),
    (".netrc", "login passwords"),
    ("_netrc", "login passwords"),
    (".pgpass", "database passwords"),
    (".pypirc", "package index tokens"),
    (".npmrc", "package registry tokens"),
    ("*.tfstate", "Terraform state, which holds secrets"),
)


def credential_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` (relative to the source root) looks like a credential, or None.

    Returns
    -------
    str or None
        ``"matches PATTERN: WHAT"`` for the first pattern of :data:`CREDENTIAL_PATTERNS` that
        a component of the path matches, else None.
    """
    parts = [part.lower() for part in Path(path).parts]
    for pattern, what in CREDENTIAL_PATTERNS:
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return f"matches {pattern}: {what}"
    return None


@dataclasses.dataclass(frozen=True)
class SourceManifest:
    """What ``setup`` ships from a local source tree.

    Attributes
    ----------
    root : Path
        The source tree.
    how : str
        How the candidate files were listed: ``"git ls-files"`` or ``"manifest"``.
    files : tuple of str
        Paths (relative, ``/``-separated) put into the archive, sorted.
    excluded : tuple of (str, str)
        Candidate paths held back as credential-looking, each with the reason.
    untracked : int
        Files git reports as untracked and not ignored (a git checkout only): not shipped.
    """

    root: Path
    how: str
    files: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    untracked: int = 0


def source_manifest(root: str | os.PathLike) -> SourceManifest:
    """The files of a source tree that ``setup`` ships, and those it holds back.

    In a git checkout (``root/.git`` exists) the candidates are git's tracked files
    (``git ls-files``, as they are in the work tree; untracked files are never shipped).
    Elsewhere (an unpacked sdist, a copied tree) they are the files of :data:`MANIFEST_FILES`
    and everything under :data:`MANIFEST_DIRS` except caches and build products. Either way,
    a candidate whose path looks like a credential (:func:`credential_reason`, the patterns of
    :data:`CREDENTIAL_PATTERNS`: private keys, key stores, ssh and AWS directories, ``.env``
    files, the user's ``ec2.toml``, anything named like credentials or secrets, ``.netrc``
    and similar token files) is never shipped, even when it is tracked: a key committed by
    mistake must not be copied to machines that other people may reach.

    Parameters
    ----------
    root : str or Path
        The root of a gdcode source tree (holding ``pyproject.toml``).

    Returns
    -------
    SourceManifest

    Raises
    ------
    ConfigError
        When ``root`` has no ``pyproject.toml``.
    ClusterError
        When ``root`` is a git checkout but git cannot list its files.
    """
    root = Path(root)
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"--source {root}: no pyproject.toml there; give the root of a "
                          "gdcode checkout")
    untracked = 0
    if (root / ".git").exists():
        how = "git ls-files"
        candidates = [n for n in _git_names(root, "--cached") if (root / n).is_file()]
        untracked = len(_git_names(root, "--others", "--exclude-standard"))
    else:
        how = "manifest"
        candidates = [n for n in MANIFEST_FILES if (root / n).is_file()]
        for top in MANIFEST_DIRS:
            for dirpath, dirnames, filenames in os.walk(root / top):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and
                                     not d.endswith(".egg-info"))
                rel = Path(dirpath).relative_to(root)
                candidates += [(rel / f).as_posix() for f in filenames
                               if not f.endswith(_SKIP_SUFFIXES)]
    files, excluded = [], []
    for name in sorted(set(candidates)):
        reason = credential_reason(name)
        if reason is None:
            files.append(name)
        else:
            excluded.append((name, reason))
    return SourceManifest(root=root, how=how, files=tuple(files), excluded=tuple(excluded),
                          untracked=untracked)


def _git_names(root: Path, *which: str) -> list[str]:
    try:
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z", *which],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ClusterError(f"cannot list the files of {root} with git: {exc}") from None
    return sorted({n for n in listing.decode().split("\0") if n})


def source_files(root: Path) -> list[Path]:
    """The files :func:`source_archive` ships from ``root`` (see :func:`source_manifest`)."""
    return [Path(n) for n in source_manifest(root).files]


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tar entry without the local user's name and ids."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def source_archive(root: Path, manifest: SourceManifest | None = None) -> bytes:
    """A gzipped tar of the files of ``manifest`` (default :func:`source_manifest` of ``root``).

    Paths are relative to ``root``; credential-looking files are never in it.
    """
    root = Path(root)
    manifest = manifest or source_manifest(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in manifest.files:
            tar.add(root / name, arcname=name, recursive=False, filter=_anonymous)
    return buf.getvalue()


def setup_script(settings: SetupSettings, git_url: str | None = None,
                 git_ref: str | None = None) -> str:
    """The shell script ``setup`` runs on every host.

    It fetches the source (from the archive on standard input, or by cloning ``git_url``),
    creates the virtual environment if it is missing, installs the source into it with pip
    and prints the installed gdcode version.

    Parameters
    ----------
    settings : SetupSettings
        Paths, interpreter, extra pip arguments and an optional preparation command.
    git_url, git_ref : str, optional
        Clone this repository (and check out this ref) instead of reading an archive.
    """
    src, venv = sh_path(settings.source_dir), sh_path(settings.venv)
    lines = ["set -e", f"SRC={src}", f"VENV={venv}"]
    if settings.prepare:
        lines.append(settings.prepare)
    lines.append('rm -rf "$SRC.new"')
    if git_url:
        lines.append(f'git clone --quiet {shlex.quote(git_url)} "$SRC.new"')
        if git_ref:
            lines.append(f'git -C "$SRC.new" checkout --quiet {shlex.quote(git_ref)}')
    else:
        lines.append('mkdir -p "$SRC.new" && tar -xzf - -C "$SRC.new"')
    lines += [
        'rm -rf "$SRC" && mv "$SRC.new" "$SRC"',
        f'[ -x "$VENV/bin/python" ] || {shlex.quote(settings.python)} -m venv "$VENV"',
        '"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet '
        + " ".join(shlex.quote(a) for a in settings.pip_args) + ' "$SRC"',
        '"$VENV/bin/python" -c "import sys, gdcode; '
        'print(\'gdcode\', gdcode.__version__, \'installed in\', sys.prefix)"',
        # each host measures its kernels' prefetch distances once, so that the ranks started
        # on it read them from its cache (gdcode/kernels/tuning.py); a failure costs speed only
        '"$VENV/bin/python" -m gdcode.kernels.calibrate --quiet || true',
    ]
    return "\n".join(lines) + "\n"


def setup_hosts(ssh: SSH, hosts: Sequence[str], settings: SetupSettings, timeout: float,
                source: Path | None = None, git_url: str | None = None,
                git_ref: str | None = None,
                manifest: SourceManifest | None = None) -> list[HostResult]:
    """Install gdcode on every host in parallel (see :func:`setup_script`).

    Parameters
    ----------
    ssh : SSH
    hosts : sequence of str
    settings : SetupSettings
    timeout : float
        Seconds each host may take.
    source : Path, optional
        Local source tree to ship (default: this checkout), unless ``git_url`` is given; only
        the files of its :func:`source_manifest` are sent.
    git_url, git_ref : str, optional
        Repository each host clones instead.
    manifest : SourceManifest, optional
        The files to send, already listed (default: the manifest of ``source``).
    """
    if git_url:
        stdin = None
    elif manifest is not None:
        stdin = source_archive(manifest.root, manifest)
    else:
        stdin = source_archive(source or default_source())
    script = setup_script(settings, git_url=git_url, git_ref=git_ref)
    return run_on_hosts(ssh, hosts, "sh -c " + shlex.quote(script), timeout, stdin=stdin)


def upload_text(ssh: SSH, host: str, files: dict[str, str], directory: str,
                timeout: float) -> HostResult:
    """Write small text files into ``directory`` on one host (names must be plain names)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, text in files.items():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a plain file name: {name!r}")
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    d = sh_path(directory)
    cmd = f"mkdir -p {d} && tar -xzf - -C {d}"
    return run_on_hosts(ssh, [host], cmd, timeout, stdin=archive.getvalue())[0]


def trust_script_coordinator(peers: Sequence[str], cluster: str) -> str:
    """Coordinator side of MPI's SSH: make a key if none, accept the peers' host keys, print it."""
    block = f"Host {' '.join(peers)}\n    StrictHostKeyChecking accept-new\n"
    marker = f"# gdcode cluster {cluster}: {' '.join(peers)}"
    return "\n".join([
        "set -e",
        'mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"',
        '[ -f "$HOME/.ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" '
        '-f "$HOME/.ssh/id_ed25519"',
        'touch "$HOME/.ssh/config" && chmod 600 "$HOME/.ssh/config"',
        f'grep -qxF {shlex.quote(marker)} "$HOME/.ssh/config" || '
        f'printf "%s\\n%s" {shlex.quote(marker)} {shlex.quote(block)} >> "$HOME/.ssh/config"',
        'cat "$HOME/.ssh/id_ed25519.pub"',
    ]) + "\n"


def authorize_script(public_key: str) -> str:
    """Add ``public_key`` to this host's ``authorized_keys`` once."""
    key = shlex.quote(public_key.strip())
    return "\n".join([
        "set -e",
        'mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"',
        'touch "$HOME/.ssh/authorized_keys" && chmod 600 "$HOME/.ssh/authorized_keys"',
        f'grep -qxF {key} "$HOME/.ssh/authorized_keys" || echo {key} >> '
        '"$HOME/.ssh/authorized_keys"',
    ]) + "\n"


def trust_hosts(ssh: SSH, coordinator: str, hosts: Sequence[str], peers: Sequence[str],
                cluster: str, timeout: float) -> list[HostResult]:
    """Let the coordinator ssh to every host without a password, as ``mpiexec`` needs.

    Parameters
    ----------
    ssh : SSH
    coordinator : str
        Address we reach the coordinator at.
    hosts : sequence of str
        Addresses we reach every host at (coordinator included).
    peers : sequence of str
        Addresses the coordinator reaches the hosts at (those of the hostfile).
    cluster : str
        Cluster name, marking the lines added to the coordinator's ``~/.ssh/config``.
    timeout : float
    """
    first = run_on_hosts(ssh, [coordinator], "sh -c " +
                         shlex.quote(trust_script_coordinator(peers, cluster)), timeout)[0]
    if first.returncode != 0:
        return [first]
    keys = [line for line in first.stdout.splitlines() if line.startswith("ssh-")]
    if not keys:
        raise ClusterError(f"{coordinator}: no public key came back from ssh-keygen")
    return run_on_hosts(ssh, hosts, "sh -c " + shlex.quote(authorize_script(keys[-1])), timeout)


# --- collect: fetch run directories from the coordinator -----------------------------------

def collect(ssh: SSH, host: str, remote: str, dest: Path, timeout: float) -> list[str]:
    """Copy ``remote`` (a directory on ``host``, relative to the remote home) into ``dest``.

    Returns
    -------
    list of str
        The top-level entries fetched (for ``results`` the run directories).
    """
    remote = remote.rstrip("/") or "/"
    parent, _, base = remote.rpartition("/")
    if base in ("", ".", "..", "~"):
        raise ConfigError(f"--remote {remote!r}: name a directory, e.g. results")
    if remote.startswith("/"):
        parent_word = shlex.quote(parent or "/")
    else:
        parent_word = sh_path("~/" + parent if parent else "~")
    cmd = f"tar -czf - -C {parent_word} {shlex.quote(base)}"
    argv = ssh.argv(host, cmd)
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError(f"ssh command {argv[0]!r} not found; install OpenSSH or set "
                          "ssh_command / --ssh / GDCODE_SSH") from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{host}: fetching {remote} took longer than {timeout:g} s") from None
    if proc.returncode != 0:
        raise ClusterError(f"{host}: cannot read {remote} (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile()
                                                                          or m.isdir()):
                raise ClusterError(f"{host}: refusing archive member {m.name!r}")
        # "data" filter (Python >= 3.10.12) also refuses links and device files
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            tar.extractall(dest, members=members)
    top = dest / base
    return sorted(p.name for p in top.iterdir()) if top.is_dir() else [base]
