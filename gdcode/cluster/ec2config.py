"""The EC2 cluster config: one TOML file, read and checked without boto3 or any AWS call.

Every key is described in ``tools/ec2.example.toml``. Unknown keys are errors, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from gdcode.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MARKETS = ("on-demand", "spot")
ADDRESS_KINDS = ("private", "public")
#: options given to every ssh unless the config sets ``ssh_options``
DEFAULT_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                       "-o", "ConnectTimeout=15")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


@dataclasses.dataclass(frozen=True)
class SetupSettings:
    """Where and how ``setup`` installs gdcode on every host (``[setup]`` table).

    Paths may start with ``~/`` (the remote user's home); every host gets the same paths, so
    that ``mpiexec`` finds the same Python everywhere.
    """

    venv: str = "~/gdcode-venv"
    source_dir: str = "~/gdcode-src"
    python: str = "python3"
    git_url: str | None = None
    git_ref: str | None = None
    pip_args: tuple[str, ...] = ()
    prepare: str | None = None
    hostfile_dir: str = "~"


@dataclasses.dataclass(frozen=True)
class NFSSettings:
    """An NFS export every instance mounts at boot (``[nfs]`` table)."""

    server: str
    mount_point: str = "/mnt/shared"
    options: str = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2"


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """A cluster: where it runs, what it launches, how to reach and set up its hosts."""

    name: str
    region: str
    availability_zone: str | None = None
    ami: str | None = None
    key_name: str | None = None
    security_groups: tuple[str, ...] = ()
    subnet: str | None = None
    coordinator_type: str | None = None
    worker_type: str | None = None
    workers: int | None = None
    market: str = "on-demand"
    spot_max_price: float | None = None
    coordinator_slots: int = 1
    worker_slots: int = 1
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    price_per_hour: dict[str, float] = dataclasses.field(default_factory=dict)
    profile: str | None = None
    hostfile_address: str = "private"
    ssh_address: str = "public"
    ssh_command: tuple[str, ...] = ("ssh",)
    ssh_user: str | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = DEFAULT_SSH_OPTIONS
    command_timeout: float = 600.0
    setup: SetupSettings = dataclasses.field(default_factory=SetupSettings)
    nfs: NFSSettings | None = None
    path: str = "<config>"

    @property
    def spot(self) -> bool:
        """True when instances are requested on the spot market."""
        return self.market == "spot"

    def require_launch(self) -> None:
        """Check that every key ``launch`` needs is set.

        Raises
        ------
        ConfigError
            Naming the missing keys.
        """
        missing = [k for k in ("ami", "coordinator_type", "worker_type", "workers")
                   if getattr(self, k) is None]
        if missing:
            raise ConfigError(f"config {self.path}: launch needs {', '.join(missing)}; "
                              "see tools/ec2.example.toml")

    def with_ssh_command(self, command: str | None) -> ClusterConfig:
        """This config with another ssh command (a shell-style string); None keeps it."""
        if command is None:
            return self
        argv = tuple(shlex.split(command))
        if not argv:
            raise ConfigError("the ssh command is empty; give e.g. --ssh ssh or unset GDCODE_SSH")
        return dataclasses.replace(self, ssh_command=argv)


_TOP_KEYS = {f.name for f in dataclasses.fields(ClusterConfig)} - {"path", "setup", "nfs",
                                                                     "security_groups"}
_TOP_KEYS |= {"security_group", "security_groups", "setup", "nfs"}


def _str(data: dict, key: str, where: str, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {key} must be a string, not {value!r}")


def _int(data: dict, key: str, where: str, default: int | None, minimum: int = 1) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key} must be a whole number >= {minimum}, not {value!r}")
    return value


def _price(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"{what} must be a positive number of US dollars per hour, not {value!r}")
    return float(value)


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{what} must be a string or a list of strings, not {value!r}")


def _choice(data: dict, key: str, where: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ConfigError(f"{where}: {key} {value!r} is not one of {', '.join(choices)}")
    return value


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), not {value!r}")
    return value


def _unknown(data: dict, known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; known: "
                          f"{', '.join(sorted(known))}")


def _remote_path(value: str, key: str, where: str) -> str:
    if not value or "\n" in value or "\0" in value:
        raise ConfigError(f"{where}: {key} {value!r} is not a path")
    if not (value.startswith("/") or value.startswith("~/") or value == "~"):
        raise ConfigError(f"{where}: {key} {value!r} must be absolute or start with ~/ "
                          "(the same path on every host)")
    return value


def parse(data: dict[str, Any], path: str = "<config>") -> ClusterConfig:
    """Check a config read from TOML and return it as a :class:`ClusterConfig`.

    Parameters
    ----------
    data : dict
        The TOML document.
    path : str
        The file it came from, for error messages.

    Raises
    ------
    ConfigError
        For a missing name or region, an unknown key, or a value of the wrong kind.
    """
    where = f"config {path}"
    _unknown(data, _TOP_KEYS, where)
    name = _str(data, "name", where)
    if not name or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r} must be set: 1-63 letters, digits, '.', '-' "
                          "or '_' (it tags every instance of the cluster)")
    region = _str(data, "region", where)
    if not region:
        raise ConfigError(f"{where}: region must be set, e.g. region = \"us-east-1\"")
    if "security_group" in data and "security_groups" in data:
        raise ConfigError(f"{where}: give security_group or security_groups, not both")
    groups = data.get("security_groups", data.get("security_group", []))
    market = _choice(data, "market", where, MARKETS, "on-demand")
    spot_max_price = data.get("spot_max_price")
    if spot_max_price is not None:
        spot_max_price = _price(spot_max_price, f"{where}: spot_max_price")
        if market != "spot":
            raise ConfigError(f"{where}: spot_max_price is set but market is {market!r}; "
                              "set market = \"spot\" or remove spot_max_price")
    tags = _table(data, "tags", where)
    for k, v in tags.items():
        if not isinstance(v, str):
            raise ConfigError(f"{where}: tag {k} must be a string, not {v!r}")
        if k.startswith("gdcode:") or k.startswith("aws:"):
            raise ConfigError(f"{where}: tag {k}: keys starting with gdcode: or aws: are "
                              "reserved; choose another key")
    prices = {str(k): _price(v, f"{where}: price_per_hour.{k}")
              for k, v in _table(data, "price_per_hour", where).items()}
    ssh_command = data.get("ssh_command", "ssh")
    if isinstance(ssh_command, str):
        ssh_command = shlex.split(ssh_command)
    ssh_command = _str_list(ssh_command, f"{where}: ssh_command")
    if not ssh_command:
        raise ConfigError(f"{where}: ssh_command is empty; leave it out to use ssh")
    timeout = data.get("command_timeout", 600.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: command_timeout must be a positive number of seconds")

    return ClusterConfig(
        name=name,
        region=region,
        availability_zone=_str(data, "availability_zone", where),
        ami=_str(data, "ami", where),
        key_name=_str(data, "key_name", where),
        security_groups=_str_list(groups, f"{where}: security_group"),
        subnet=_str(data, "subnet", where),
        coordinator_type=_str(data, "coordinator_type", where),
        worker_type=_str(data, "worker_type", where),
        workers=_int(data, "workers", where, None),
        market=market,
        spot_max_price=spot_max_price,
        coordinator_slots=_int(data, "coordinator_slots", where, 1) or 1,
        worker_slots=_int(data, "worker_slots", where, 1) or 1,
        tags=dict(tags),
        price_per_hour=prices,
        profile=_str(data, "profile", where),
        hostfile_address=_choice(data, "hostfile_address", where, ADDRESS_KINDS, "private"),
        ssh_address=_choice(data, "ssh_address", where, ADDRESS_KINDS, "public"),
        ssh_command=ssh_command,
        ssh_user=_str(data, "ssh_user", where),
        identity_file=_str(data, "identity_file", where),
        ssh_options=_str_list(data.get("ssh_options", list(DEFAULT_SSH_OPTIONS)),
                              f"{where}: ssh_options"),
        command_timeout=float(timeout),
        setup=_parse_setup(_table(data, "setup", where), f"{where} [setup]"),
        nfs=_parse_nfs(data["nfs"], f"{where} [nfs]") if "nfs" in data else None,
        path=path,
    )


def _parse_setup(data: dict, where: str) -> SetupSettings:
    known = {f.name for f in dataclasses.fields(SetupSettings)}
    _unknown(data, known, where)
    d = SetupSettings()
    venv = _remote_path(_str(data, "venv", where, d.venv), "venv", where)
    source_dir = _remote_path(_str(data, "source_dir", where, d.source_dir), "source_dir", where)
    for key, value in (("venv", venv), ("source_dir", source_dir)):
        if value.rstrip("/") in ("", "~") or value.count("/") < (2 if value.startswith("/") else 1):
            raise ConfigError(f"{where}: {key} {value!r} is too shallow (setup replaces it); "
                              "use a directory of its own such as ~/gdcode-venv")
    return SetupSettings(
        venv=venv,
        source_dir=source_dir,
        python=_str(data, "python", where, d.python),
        git_url=_str(data, "git_url", where),
        git_ref=_str(data, "git_ref", where),
        pip_args=_str_list(data.get("pip_args", []), f"{where}: pip_args"),
        prepare=_str(data, "prepare", where),
        hostfile_dir=_remote_path(_str(data, "hostfile_dir", where, d.hostfile_dir),
                                  "hostfile_dir", where),
    )


def _parse_nfs(data: Any, where: str) -> NFSSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: nfs must be a table")
    _unknown(data, {f.name for f in dataclasses.fields(NFSSettings)}, where)
    server = _str(data, "server", where)
    if not server or ":" not in server:
        raise ConfigError(f"{where}: server must be set as HOST:/EXPORT, e.g. "
                          "\"fs-0123.efs.us-east-1.amazonaws.com:/\"")
    d = NFSSettings(server=server)
    mount_point = _str(data, "mount_point", where, d.mount_point)
    if not mount_point.startswith("/"):
        raise ConfigError(f"{where}: mount_point {mount_point!r} must be an absolute path")
    return NFSSettings(server=server, mount_point=mount_point,
                       options=_str(data, "options", where, d.options))


#: the cluster name of :func:`for_hosts_file` (and so ``collect``'s default ``cluster-hosts``)
HOSTS_FILE_NAME = "hosts"


def for_hosts_file(hosts_file: str | os.PathLike) -> ClusterConfig:
    """The config of hosts given by a file alone, with no config file.

    ``run``, ``setup`` and ``collect`` with ``--hosts FILE`` ask EC2 nothing, so they need no
    region or instance settings: every other key keeps its default (ssh as ``ssh`` with
    :data:`DEFAULT_SSH_OPTIONS` and no user or key, the ``[setup]`` defaults, one slot a host).

    Parameters
    ----------
    hosts_file : str or Path
        The hosts file, named in messages.
    """
    return ClusterConfig(name=HOSTS_FILE_NAME, region="",
                         path=f"<no config file: --hosts {hosts_file}>")


def load(path: str | os.PathLike) -> ClusterConfig:
    """Read and check a cluster config file.

    Raises
    ------
    ConfigError
        For a missing file, invalid TOML, or any bad value (see :func:`parse`).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; copy tools/ec2.example.toml and "
                          "edit it, then pass it with --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return parse(data, str(p))
