"""Launch, inspect, set up and tear down a gdcode cluster on EC2 (``gdcode ec2``, ``tools/ec2.py``).

``gdcode ec2 ACTION --config CLUSTER.toml [--dry-run]`` with ACTION one of

- ``launch``: one coordinator and W workers, every instance tagged with the cluster name and a
  new cluster id; waits until they run, prints them and their cost per hour at the configured
  prices;
- ``status``: the cluster's instances, their state and addresses;
- ``hosts``: hostfiles for MPICH and Open MPI (coordinator first) and a plain address list;
- ``setup``: installs gdcode into the same virtual environment on every host (the tracked
  files of this checkout, never credential-looking ones, or a git URL), lets the coordinator
  ssh to every host, and copies the hostfiles to it;
- ``run -- COMMAND``: runs a command on every host over SSH in parallel, with a timeout, and
  reports each host's exit code;
- ``collect``: copies run directories from the coordinator;
- ``terminate``: terminates the cluster's instances, after confirmation unless ``--yes``.

A cluster is the instances tagged ``gdcode:cluster = NAME`` *and* ``gdcode:cluster-id = ID``.
``launch`` draws the id (a uuid4 in hex) and records it in a local state file, one per region
and cluster name (:func:`state_path`: ``$GDCODE_EC2_STATE_DIR/REGION/NAME.json``, by default
under ``$XDG_STATE_HOME/gdcode/ec2`` or ``~/.local/state/gdcode/ec2``). Every later action
selects instances by name and id, so two clusters of the same name in one account (launched
by two people, or from two machines) never list, run on or terminate each other's instances.
Without a recorded id (a cluster launched elsewhere) those actions refuse with exit code 2
unless given ``--cluster-id ID``; ``run``, ``setup`` and ``collect`` with ``--hosts FILE``
ask EC2 nothing and need neither an id nor a config file.

``--dry-run`` prints the AWS API calls instead of making them (and ``setup --dry-run`` lists
the files it would send). boto3 is imported only here, so gdcode itself imports without it.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import functools
import json
import os
import re
import shlex
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gdcode.cluster import ClusterError, hostfile, remote
from gdcode.cluster.ec2config import ClusterConfig, NFSSettings
from gdcode.errors import ConfigError

TAG_CLUSTER = "gdcode:cluster"
TAG_CLUSTER_ID = "gdcode:cluster-id"
TAG_ROLE = "gdcode:role"
TAG_INDEX = "gdcode:index"
#: states of an instance that still exists (and may cost money)
LIVE_STATES = ("pending", "running", "stopping", "stopped")
#: waiter polling: seconds between checks and how many checks before giving up
WAIT_DELAY, WAIT_ATTEMPTS = 5, 120
#: the config file read when ``--config`` is not given
DEFAULT_CONFIG = "ec2.toml"
#: environment variable naming the directory of the local cluster state files
STATE_ENV = "GDCODE_EC2_STATE_DIR"
_CLUSTER_ID_RE = re.compile(r"^[0-9a-f]{32}$")

CREDENTIALS_HELP = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
    "AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE / profile = \"...\" in the config for "
    "a profile of ~/.aws/credentials (`aws configure` writes one)")

# ClientError codes -> (kind, advice); kind "config" exits 2, "refused" exits 1
_ERRORS: dict[str, tuple[str, str]] = {
    "InvalidInstanceType": ("config", "check coordinator_type and worker_type"),
    "Unsupported": ("config", "choose an instance type and availability zone that go together "
                              "(aws ec2 describe-instance-type-offerings)"),
    "InvalidParameterValue": ("config", "check the value it names in the config"),
    "InvalidParameterCombination": ("config", "check the config values it names"),
    "InvalidAMIID.NotFound": ("config", "the AMI must exist in the configured region"),
    "InvalidAMIID.Malformed": ("config", "ami looks like ami-0123456789abcdef0"),
    "InvalidKeyPair.NotFound": ("config", "key_name must name a key pair of this region"),
    "InvalidGroup.NotFound": ("config", "security_group must be a group id of this region"),
    "InvalidSubnetID.NotFound": ("config", "subnet must be a subnet id of this region"),
    "InvalidZone.NotFound": ("config", "availability_zone must be a zone of the region"),
    "AuthFailure": ("config", "the AWS credentials were refused; check them"),
    "UnauthorizedOperation": ("config", "these credentials may not do this; grant the EC2 "
                                        "permissions (RunInstances, DescribeInstances, "
                                        "CreateTags, TerminateInstances) or use another profile"),
    "OptInRequired": ("config", "the account is not subscribed to this region or AMI"),
    "InsufficientInstanceCapacity": ("refused", "AWS has no capacity for this instance type "
                                                "here now; try another availability zone or "
                                                "instance type, or later"),
    "SpotMaxPriceTooLow": ("refused", "the spot price is above spot_max_price; raise it or use "
                                      "market = \"on-demand\""),
    "MaxSpotInstanceCountExceeded": ("refused", "the account's spot instance quota is used up; "
                                                "request more in Service Quotas, use fewer "
                                                "workers, or market = \"on-demand\""),
    "InstanceLimitExceeded": ("refused", "the account's instance quota is used up; request "
                                         "more in Service Quotas or use fewer workers"),
    "VcpuLimitExceeded": ("refused", "the account's vCPU quota for this instance family is used "
                                     "up; request more in Service Quotas or use fewer or "
                                     "smaller instances"),
    "MaxSpotFleetRequestCountExceeded": ("refused", "the account's spot request quota is used "
                                                    "up; request more in Service Quotas"),
    "RequestLimitExceeded": ("refused", "AWS is throttling requests; wait a minute and retry"),
}


# --- boto3 ---------------------------------------------------------------------------------

def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError("the EC2 tool needs boto3: pip install 'gdcode[ec2]' "
                          "(or pip install boto3)") from None
    return boto3


@functools.lru_cache(maxsize=1)
def _data_loader() -> Any:
    """One botocore data loader for the process: it parses the large EC2 model only once."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def boto3_session(profile: str | None = None, region: str | None = None) -> Any:
    """A fresh boto3 session (credentials resolved anew) sharing the parsed service data."""
    boto3 = _boto3()
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader())
    return boto3.session.Session(botocore_session=core, profile_name=profile, region_name=region)


@functools.lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """EC2 regions of every AWS partition, from botocore's bundled endpoint data (no AWS call)."""
    session = boto3_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)


def check_region(region: str) -> None:
    """Raise :class:`ConfigError` unless ``region`` is an EC2 region botocore knows."""
    regions = known_regions()
    if region in regions:
        return
    close = difflib.get_close_matches(region, sorted(regions), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else \
        f"known: {', '.join(sorted(regions))}"
    import botocore

    raise ConfigError(f"region {region!r} is not an EC2 region; {hint} (a region newer than "
                      f"botocore {botocore.__version__} needs a newer boto3)")


def explain(op: str, exc: Exception, cfg: ClusterConfig) -> Exception:
    """A clear :class:`ConfigError` or :class:`ClusterError` for a boto3 exception."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigError(CREDENTIALS_HELP)
    if isinstance(exc, bx.ProfileNotFound):
        return ConfigError(f"AWS profile not found ({exc}); fix profile in the config or "
                           "AWS_PROFILE, or run `aws configure --profile NAME`")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return ClusterError(f"cannot reach the EC2 endpoint of {cfg.region} ({exc}); check the "
                            "network connection")
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", str(exc))
        kind, advice = _ERRORS.get(code, ("refused", ""))
        if code not in _ERRORS and code.endswith(".NotFound"):
            kind, advice = "config", "check the id it names in the config"
        text = f"AWS refused {op} ({code}): {message}" + (f"; {advice}" if advice else "")
        return ConfigError(text) if kind == "config" else ClusterError(text)
    if isinstance(exc, bx.WaiterError):
        return ClusterError(f"waiting for the instances failed: {exc}; see `gdcode ec2 status`")
    if isinstance(exc, bx.BotoCoreError):
        return ClusterError(f"{op} failed: {exc}")
    return exc


# --- local state: the id of each cluster launched from here -------------------------------

def state_dir() -> Path:
    """The directory of the local cluster state files.

    ``$GDCODE_EC2_STATE_DIR`` when set, else ``$XDG_STATE_HOME/gdcode/ec2``, else
    ``~/.local/state/gdcode/ec2``.
    """
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    return Path(base).expanduser() / "gdcode" / "ec2"


def state_path(cfg: ClusterConfig) -> Path:
    """The state file of the cluster of ``cfg``: ``state_dir()/REGION/NAME.json``."""
    return state_dir() / cfg.region / f"{cfg.name}.json"


def check_cluster_id(value: str, where: str) -> str:
    """``value`` if it is a cluster id (32 lower-case hex digits), else :class:`ConfigError`."""
    if not isinstance(value, str) or not _CLUSTER_ID_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not a cluster id (32 hex digits, the "
                          f"{TAG_CLUSTER_ID} tag of the cluster's instances)")
    return value


def read_state(cfg: ClusterConfig) -> dict[str, Any] | None:
    """The local state of the cluster of ``cfg``, or None when there is none.

    Raises
    ------
    ConfigError
        When the state file exists but is not a state file of this cluster.
    """
    path = state_path(cfg)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cluster state file {path} cannot be read ({exc}); remove it and "
                          "pass --cluster-id ID, or launch the cluster again") from None
    if not isinstance(state, dict) or state.get("name") != cfg.name or \
            state.get("region") != cfg.region:
        raise ConfigError(f"cluster state file {path} is not the state of cluster {cfg.name} in "
                          f"{cfg.region}; remove it and pass --cluster-id ID")
    check_cluster_id(str(state.get("cluster_id", "")), f"cluster state file {path}")
    return state


def write_state(cfg: ClusterConfig, cluster_id: str) -> Path:
    """Record ``cluster_id`` as the id of the cluster of ``cfg`` (replacing an older one)."""
    path = state_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"name": cfg.name, "region": cfg.region, "cluster_id": cluster_id,
             "launched": datetime.datetime.now(datetime.timezone.utc).isoformat(
                 timespec="seconds"),
             "config": str(cfg.path)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def no_state_message(cfg: ClusterConfig) -> str:
    """The one line with which actions refuse a cluster whose id is not recorded here."""
    return (f"no cluster id recorded for cluster {cfg.name} in {cfg.region} ({state_path(cfg)} "
            "does not exist), so its instances cannot be told from those of another cluster of "
            "the same name: copy that file from the machine that launched it, or pass "
            f"--cluster-id ID (the {TAG_CLUSTER_ID} tag of its instances); run, setup and "
            "collect also take --hosts FILE")


class Api:
    """The EC2 calls of one cluster: made through boto3, or printed under ``--dry-run``.

    Parameters
    ----------
    cfg : ClusterConfig
    dry_run : bool
        Print each call (operation and arguments) and return None instead of calling AWS.
    client : botocore client, optional
        Use this client (tests pass a stubbed one); default a client for ``cfg.region``.
    out : text stream, optional
        Where dry-run calls are printed (default standard output).
    cluster_id : str, optional
        The cluster's id (``--cluster-id``); default the one of the local state file, read
        when first needed (:meth:`cluster_id`).
    """

    def __init__(self, cfg: ClusterConfig, dry_run: bool = False, client: Any = None,
                 out: TextIO | None = None, cluster_id: str | None = None):
        self.cfg = cfg
        self.dry_run = dry_run
        self._client = client
        self.out = out or sys.stdout
        self.calls: list[tuple[str, dict]] = []
        self._cluster_id = None if cluster_id is None else \
            check_cluster_id(cluster_id, "--cluster-id")

    def cluster_id(self) -> str:
        """The id that, with the name, selects the cluster's instances.

        Raises
        ------
        ConfigError
            When it was not given and the local state records none (:func:`no_state_message`).
        """
        if self._cluster_id is None:
            state = read_state(self.cfg)
            if state is None:
                raise ConfigError(no_state_message(self.cfg))
            self._cluster_id = state["cluster_id"]
        return self._cluster_id

    def set_cluster_id(self, cluster_id: str) -> None:
        """Select the cluster of this id from now on (``launch`` sets the new one)."""
        self._cluster_id = check_cluster_id(cluster_id, "cluster id")

    @property
    def client(self) -> Any:
        """The boto3 EC2 client, created on first use."""
        if self._client is None:
            try:
                self._client = boto3_session(self.cfg.profile, self.cfg.region).client("ec2")
            except Exception as exc:  # noqa: BLE001 - translated or re-raised by explain
                raise explain("creating the EC2 client", exc, self.cfg) from None
        return self._client

    def call(self, op: str, **kwargs: Any) -> dict | None:
        """Make (or print, under dry run) one EC2 API call and return its response."""
        self.calls.append((op, kwargs))
        if self.dry_run:
            body = json.dumps(kwargs, sort_keys=True, default=str)
            print(f"[dry-run] ec2({self.cfg.region}).{op}(**{body})", file=self.out)
            return None
        try:
            return getattr(self.client, op)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by explain
            raise explain(op, exc, self.cfg) from None

    def wait(self, waiter: str, **kwargs: Any) -> None:
        """Wait with a boto3 waiter (or print it under dry run)."""
        kwargs.setdefault("WaiterConfig", {"Delay": WAIT_DELAY, "MaxAttempts": WAIT_ATTEMPTS})
        self.calls.append((f"wait:{waiter}", kwargs))
        if self.dry_run:
            body = json.dumps(kwargs, sort_keys=True, default=str)
            print(f"[dry-run] ec2({self.cfg.region}).get_waiter({waiter!r}).wait(**{body})",
                  file=self.out)
            return
        try:
            self.client.get_waiter(waiter).wait(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by explain
            raise explain(f"waiting for {waiter}", exc, self.cfg) from None


# --- instances -----------------------------------------------------------------------------

class Instance:
    """One instance of the cluster, as DescribeInstances reports it."""

    def __init__(self, data: dict):
        self.data = data
        self.tags = {t["Key"]: t["Value"] for t in data.get("Tags", [])}
        self.id: str = data["InstanceId"]
        self.type: str = data.get("InstanceType", "?")
        self.state: str = data.get("State", {}).get("Name", "?")
        self.private_ip: str | None = data.get("PrivateIpAddress")
        self.public_ip: str | None = data.get("PublicIpAddress")
        self.lifecycle: str = data.get("InstanceLifecycle", "on-demand")
        self.role: str = self.tags.get(TAG_ROLE, "?")
        try:
            self.index = int(self.tags.get(TAG_INDEX, "-1"))
        except ValueError:
            self.index = -1

    @property
    def cluster(self) -> str | None:
        """The cluster name this instance is tagged with."""
        return self.tags.get(TAG_CLUSTER)

    @property
    def cluster_id(self) -> str | None:
        """The cluster id this instance is tagged with (None for one launched without)."""
        return self.tags.get(TAG_CLUSTER_ID)

    def address(self, kind: str) -> str | None:
        """Its private or public address; a missing public address falls back to the private."""
        if kind == "public":
            return self.public_ip or self.private_ip
        return self.private_ip

    def sort_key(self) -> tuple:
        return (self.role != "coordinator", self.index, self.id)


def find_instances(api: Api, states: Sequence[str] | None = LIVE_STATES,
                   cluster_id: str | None = None) -> list[Instance]:
    """The cluster's instances, coordinator first, then workers by index.

    Only instances whose ``gdcode:cluster`` tag equals the cluster name and whose
    ``gdcode:cluster-id`` tag equals the cluster id are returned: the tag filters of the
    request are checked again on every instance of the answer.

    Parameters
    ----------
    api : Api
    states : sequence of str, optional
        Instance states to keep (None: every state).
    cluster_id : str, optional
        The id to select (default :meth:`Api.cluster_id`).

    Raises
    ------
    ConfigError
        When no id is given or recorded locally.
    """
    cid = cluster_id or api.cluster_id()
    return [i for i in find_named(api, states, cluster_id=cid) if i.cluster_id == cid]


def find_named(api: Api, states: Sequence[str] | None = LIVE_STATES,
               cluster_id: str | None = None) -> list[Instance]:
    """Instances tagged with the cluster's name, of any cluster id (or of ``cluster_id``).

    ``launch`` uses it to tell the user of other clusters of the same name; every other
    action goes through :func:`find_instances`.
    """
    filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [api.cfg.name]}]
    if cluster_id is not None:
        filters.append({"Name": f"tag:{TAG_CLUSTER_ID}", "Values": [cluster_id]})
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    found: list[Instance] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"Filters": filters}
        if token:
            kwargs["NextToken"] = token
        resp = api.call("describe_instances", **kwargs)
        if resp is None:
            return []
        for reservation in resp.get("Reservations", []):
            for data in reservation.get("Instances", []):
                inst = Instance(data)
                if inst.cluster == api.cfg.name and (not states or inst.state in states):
                    found.append(inst)
        token = resp.get("NextToken")
        if not token:
            break
    return sorted(found, key=Instance.sort_key)


def _tags(cfg: ClusterConfig, role: str, name: str, cluster_id: str) -> list[dict[str, str]]:
    tags = {**cfg.tags, "Name": name, TAG_CLUSTER: cfg.name, TAG_CLUSTER_ID: cluster_id,
            TAG_ROLE: role}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _price_text(price: float) -> str:
    return f"{price:.6f}".rstrip("0").rstrip(".")


def nfs_user_data(nfs: NFSSettings) -> str:
    """A boot script that mounts the NFS export on every instance (and on every reboot)."""
    mp = shlex.quote(nfs.mount_point)
    line = shlex.quote(f"{nfs.server} {nfs.mount_point} nfs4 {nfs.options},_netdev 0 0")
    marker = shlex.quote(f" {nfs.mount_point} nfs4 ")
    return "\n".join([
        "#!/bin/sh",
        "# written by gdcode ec2 launch: mount the cluster's shared NFS directory",
        "set -e",
        "if ! command -v mount.nfs4 >/dev/null 2>&1; then",
        "  if command -v apt-get >/dev/null 2>&1; then",
        "    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nfs-common",
        "  elif command -v dnf >/dev/null 2>&1; then dnf install -y -q nfs-utils",
        "  else yum install -y -q nfs-utils; fi",
        "fi",
        f"mkdir -p {mp}",
        f"grep -qF {marker} /etc/fstab || echo {line} >> /etc/fstab",
        f"mountpoint -q {mp} || mount {mp}",
        f"chmod 1777 {mp} || true",
    ]) + "\n"


def run_request(cfg: ClusterConfig, role: str, count: int, cluster_id: str) -> dict[str, Any]:
    """The RunInstances arguments for the coordinator (``role="coordinator"``) or the workers.

    Parameters
    ----------
    cfg : ClusterConfig
    role : {"coordinator", "worker"}
    count : int
        Instances to start; all or none (MinCount = MaxCount).
    cluster_id : str
        The cluster's id, tagged on every instance and volume beside its name.
    """
    itype = cfg.coordinator_type if role == "coordinator" else cfg.worker_type
    name = f"{cfg.name}-{role}"
    req: dict[str, Any] = {
        "ImageId": cfg.ami,
        "InstanceType": itype,
        "MinCount": count,
        "MaxCount": count,
        "TagSpecifications": [{"ResourceType": kind, "Tags": _tags(cfg, role, name, cluster_id)}
                              for kind in ("instance", "volume")],
    }
    if cfg.key_name:
        req["KeyName"] = cfg.key_name
    if cfg.subnet:
        req["SubnetId"] = cfg.subnet
    if cfg.security_groups:
        req["SecurityGroupIds"] = list(cfg.security_groups)
    if cfg.availability_zone:
        req["Placement"] = {"AvailabilityZone": cfg.availability_zone}
    if cfg.spot:
        spot: dict[str, Any] = {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"}
        if cfg.spot_max_price is not None:
            spot["MaxPrice"] = _price_text(cfg.spot_max_price)
        req["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
    if cfg.nfs is not None:
        req["UserData"] = nfs_user_data(cfg.nfs)
    return req


def hourly_cost(cfg: ClusterConfig, types: Sequence[str]) -> tuple[float | None, str]:
    """What instances of these types cost per hour at the configured prices.

    Spot instances cost at most ``spot_max_price`` each (or at most the ``price_per_hour``
    of their type, the on-demand price that caps spot when no maximum is set); on-demand
    instances cost their type's ``price_per_hour``. Nothing is made up: a missing price
    gives ``(None, "price unknown ...")``.

    Returns
    -------
    (float or None, str)
        Dollars per hour and a sentence saying how it was reckoned.
    """
    counts: dict[str, int] = {}
    for t in types:
        counts[t] = counts.get(t, 0) + 1
    n = len(types)
    if n == 0:
        return 0.0, "no instances"
    if cfg.spot and cfg.spot_max_price is not None:
        total = cfg.spot_max_price * n
        return total, (f"at most ${total:.4f}/hour: {n} spot instance(s) at the configured "
                       f"maximum price ${_price_text(cfg.spot_max_price)} each")
    missing = sorted(t for t in counts if t not in cfg.price_per_hour)
    if missing:
        return None, (f"price unknown: no price_per_hour for {', '.join(missing)} in the config "
                      f"(add e.g. price_per_hour.\"{missing[0]}\" = DOLLARS)")
    total = sum(cfg.price_per_hour[t] * k for t, k in counts.items())
    parts = " + ".join(f"{k} x {t} at ${_price_text(cfg.price_per_hour[t])}"
                       for t, k in sorted(counts.items()))
    if cfg.spot:
        return total, (f"at most ${total:.4f}/hour (spot, capped at the configured "
                       f"price_per_hour): {parts}")
    return total, f"${total:.4f}/hour at the configured price_per_hour: {parts}"


def print_instances(instances: Sequence[Instance], out: TextIO) -> None:
    """A table of instances: role, index, id, type, market, state, addresses."""
    rows = [("role", "index", "instance", "type", "market", "state", "private", "public")]
    for i in instances:
        rows.append((i.role, "" if i.index < 0 else str(i.index), i.id, i.type, i.lifecycle,
                     i.state, i.private_ip or "-", i.public_ip or "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)


# --- actions -------------------------------------------------------------------------------

def validate_launch(api: Api) -> None:
    """Check instance types and availability zone with AWS before starting anything."""
    cfg = api.cfg
    cfg.require_launch()
    assert cfg.coordinator_type is not None and cfg.worker_type is not None
    types = sorted({cfg.coordinator_type, cfg.worker_type})
    api.call("describe_instance_types", InstanceTypes=types)
    if cfg.availability_zone:
        api.call("describe_availability_zones", ZoneNames=[cfg.availability_zone])
        resp = api.call("describe_instance_type_offerings", LocationType="availability-zone",
                        Filters=[{"Name": "location", "Values": [cfg.availability_zone]},
                                 {"Name": "instance-type", "Values": types}])
        if resp is not None:
            offered = {o["InstanceType"] for o in resp.get("InstanceTypeOfferings", [])}
            missing = [t for t in types if t not in offered]
            if missing:
                raise ConfigError(f"instance type {', '.join(missing)} is not offered in "
                                  f"{cfg.availability_zone}; choose another type or zone")


def launch(api: Api, out: TextIO | None = None) -> list[Instance]:
    """Start the coordinator and the workers, tag them, wait until they run, print them.

    Returns
    -------
    list of Instance
        The running instances, coordinator first (empty under dry run).

    The new cluster id is recorded in the local state file (:func:`state_path`) before any
    instance starts, so that a launch that fails half-way can still be terminated.

    Raises
    ------
    ConfigError
        For a missing launch key, an unknown region, instance type or zone.
    ClusterError
        When the cluster recorded here still has instances, or AWS refuses (capacity, spot,
        quota).
    """
    out = out or sys.stdout
    cfg = api.cfg
    cfg.require_launch()
    check_region(cfg.region)
    state = read_state(cfg)
    if state is not None:
        existing = find_instances(api, cluster_id=state["cluster_id"])
        if existing:
            raise ClusterError(f"cluster {cfg.name} already has {len(existing)} instance(s) in "
                               f"{cfg.region}; see `gdcode ec2 status`, terminate them first or "
                               "choose another name")
    others = find_named(api)
    if others:
        ids = sorted({i.cluster_id or "none" for i in others})
        print(f"note: {len(others)} other instance(s) in {cfg.region} are tagged "
              f"{TAG_CLUSTER}={cfg.name} with cluster id(s) {', '.join(ids)}; they belong to "
              "another cluster of the same name and this one never touches them", file=out)
    validate_launch(api)
    cluster_id = uuid.uuid4().hex
    api.set_cluster_id(cluster_id)
    if api.dry_run:
        print(f"[dry-run] would record cluster id {cluster_id} in {state_path(cfg)}", file=out)
    else:
        path = write_state(cfg, cluster_id)
        print(f"cluster id {cluster_id} (recorded in {path})", file=out)
    assert cfg.workers is not None and cfg.coordinator_type is not None and cfg.worker_type is not None
    n_workers: int = cfg.workers
    n = 1 + n_workers
    market = "spot" if cfg.spot else "on-demand"
    print(f"launching cluster {cfg.name} in {cfg.region}: 1 x {cfg.coordinator_type} "
          f"(coordinator) + {cfg.workers} x {cfg.worker_type} (workers), {market}", file=out)
    started: list[str] = []
    try:
        for role, count in (("coordinator", 1), ("worker", n_workers)):
            resp = api.call("run_instances", **run_request(cfg, role, count, cluster_id))
            if resp is None:  # dry run: placeholders stand for the ids AWS would return
                ids = [f"<{role} {i + 1} id>" for i in range(count)]
            else:
                made = sorted(resp["Instances"], key=lambda d: d.get("AmiLaunchIndex", 0))
                ids = [d["InstanceId"] for d in made]
            started += ids
            for i, iid in enumerate(ids):
                index = 0 if role == "coordinator" else i + 1
                name = f"{cfg.name}-coordinator" if index == 0 else f"{cfg.name}-worker-{index}"
                api.call("create_tags", Resources=[iid],
                         Tags=[{"Key": TAG_INDEX, "Value": str(index)},
                               {"Key": "Name", "Value": name}])
        if not api.dry_run:
            print(f"waiting until {len(started)} instance(s) run", file=out, flush=True)
        api.wait("instance_running", InstanceIds=started)
    except (ClusterError, ConfigError) as exc:
        if started and not api.dry_run:
            exc.args = (f"{exc.args[0]}\n{len(started)} instance(s) already started are tagged "
                        f"{TAG_CLUSTER}={cfg.name}, {TAG_CLUSTER_ID}={cluster_id} and may cost "
                        "money: "
                        f"{', '.join(started)}; remove them with `gdcode ec2 terminate`",)
        raise
    _, cost = hourly_cost(cfg, [cfg.coordinator_type] + [cfg.worker_type] * n_workers)
    if api.dry_run:
        print(f"would start {n} instance(s); cost {cost}", file=out)
        return []
    instances = find_instances(api, states=("running",))
    print_instances(instances, out)
    print(f"started {len(instances)} instance(s); cost {cost}", file=out)
    return instances


def status(api: Api, out: TextIO | None = None) -> list[Instance]:
    """Print the cluster's instances (every state) and the cost per hour of those running."""
    out = out or sys.stdout
    cfg = api.cfg
    check_region(cfg.region)
    instances = find_instances(api, states=None)
    if api.dry_run:
        return []
    label = f"cluster {cfg.name} (id {api.cluster_id()})"
    if not instances:
        print(f"{label}: no instances in {cfg.region}", file=out)
        return []
    print_instances(instances, out)
    live = [i for i in instances if i.state in ("pending", "running")]
    _, cost = hourly_cost(cfg, [i.type for i in live])
    print(f"{label}: {len(live)} of {len(instances)} instance(s) pending or running; "
          f"cost {cost}", file=out)
    return instances


def running_hosts(api: Api) -> list[Instance]:
    """The running instances, coordinator first; an error if there is no running coordinator."""
    check_region(api.cfg.region)
    instances = find_instances(api, states=("running",))
    if api.dry_run:
        return []
    if not instances or instances[0].role != "coordinator":
        raise ClusterError(f"cluster {api.cfg.name} has no running coordinator in "
                           f"{api.cfg.region}; see `gdcode ec2 status`")
    return instances


def host_list(cfg: ClusterConfig, instances: Sequence[Instance]) -> list[hostfile.Host]:
    """The hostfile entries of the instances (coordinator first) at the configured addresses."""
    hosts = []
    for i, inst in enumerate(instances):
        address = inst.address(cfg.hostfile_address)
        if address is None:
            raise ClusterError(f"instance {inst.id} has no {cfg.hostfile_address} address yet")
        hosts.append(hostfile.Host(address, cfg.coordinator_slots if i == 0 else
                                   cfg.worker_slots))
    return hosts


def hostfile_texts(cfg: ClusterConfig, hosts: Sequence[hostfile.Host],
                   directory: str = ".") -> dict[str, str]:
    """The three files ``hosts`` writes: both hostfile formats and a plain address list."""
    d = directory.rstrip("/") or "/"
    return {
        "hostfile.mpich": hostfile.format_hostfile(hosts, "mpich", f"{d}/hostfile.mpich"),
        "hostfile.openmpi": hostfile.format_hostfile(hosts, "openmpi", f"{d}/hostfile.openmpi"),
        "hosts.txt": "".join(f"{h.address}\n" for h in hosts),
    }


def write_hosts(api: Api, out_dir: Path, out: TextIO | None = None) -> list[Path]:
    """Write ``hostfile.mpich``, ``hostfile.openmpi`` and ``hosts.txt`` for the running cluster."""
    out = out or sys.stdout
    instances = running_hosts(api)
    if api.dry_run:
        return []
    cfg = api.cfg
    if cfg.workers is not None and len(instances) - 1 < cfg.workers:
        print(f"warning: only {len(instances) - 1} of {cfg.workers} workers are running",
              file=sys.stderr)
    hosts = host_list(cfg, instances)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in hostfile_texts(cfg, hosts, str(out_dir)).items():
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
        print(f"wrote {path}", file=out)
    n = hostfile.total_slots(hosts)
    print(f"{len(hosts)} host(s), {n} slot(s); on the coordinator: "
          f"{hostfile.launch_line('mpich', 'hostfile.mpich', hosts)}", file=out)
    return paths


def ssh_of(cfg: ClusterConfig) -> remote.SSH:
    """How to reach the cluster's hosts."""
    return remote.SSH(command=cfg.ssh_command, options=cfg.ssh_options, user=cfg.ssh_user,
                      identity_file=cfg.identity_file)


def _targets(api: Api, hosts_file: str | None) -> list[str]:
    """Addresses to ssh to, coordinator first: from ``--hosts FILE`` or from EC2."""
    if hosts_file:
        return [h.address for h in hostfile.make_hosts(hostfile.read_addresses(hosts_file),
                                                       origin=f"--hosts {hosts_file}")]
    instances = running_hosts(api)
    if api.dry_run:
        return []
    return [a for i in instances if (a := i.address(api.cfg.ssh_address)) is not None]


def run_command(api: Api, command: Sequence[str], on: str = "all", timeout: float | None = None,
                hosts_file: str | None = None, out: TextIO | None = None) -> int:
    """Run ``command`` on the cluster's hosts in parallel; return 0 if it succeeded everywhere."""
    out = out or sys.stdout
    if not command:
        raise ConfigError("run needs a command: gdcode ec2 run -- COMMAND ...")
    cfg = api.cfg
    shell = remote.with_venv_path(" ".join(command), cfg.setup.venv)
    targets = _targets(api, hosts_file)
    if on == "coordinator":
        targets = targets[:1]
    elif on == "workers":
        targets = targets[1:]
        if not targets and not api.dry_run:
            raise ClusterError("the cluster has no workers running")
    ssh = ssh_of(cfg)
    if api.dry_run:
        shown = targets or ["HOST"]
        for h in shown:
            print(f"[dry-run] {shlex.join(ssh.argv(h, shell))}", file=out)
        return 0
    results = remote.run_on_hosts(ssh, targets, shell, timeout or cfg.command_timeout)
    return remote.report(results, out, what="command")


def print_manifest(manifest: remote.SourceManifest, out: TextIO) -> None:
    """List what ``setup`` would send: every file, then those held back and why."""
    print(f"[dry-run] files that would be sent from {manifest.root} ({manifest.how}):", file=out)
    for name in manifest.files:
        print(f"  send      {name}", file=out)
    for name, reason in manifest.excluded:
        print(f"  EXCLUDED  {name}  (credential-looking, {reason})", file=out)
    if manifest.untracked:
        print(f"[dry-run] {manifest.untracked} untracked file(s) are not sent (only files "
              "tracked by git are)", file=out)
    print(f"[dry-run] {len(manifest.files)} file(s) would be sent, {len(manifest.excluded)} "
          "excluded; nothing was sent", file=out)


def setup(api: Api, source: str | None = None, git_url: str | None = None,
          git_ref: str | None = None, timeout: float | None = None,
          hosts_file: str | None = None, trust: bool = True, out: TextIO | None = None) -> int:
    """Install gdcode on every host, let the coordinator reach every host, copy the hostfiles.

    From a local source tree only the files of :func:`remote.source_manifest` are sent: those
    tracked by git (or, outside a git checkout, those of the manifest), never a
    credential-looking one. Under dry run the files are listed and nothing is sent.

    Returns
    -------
    int
        0 when every step succeeded on every host, else 1.
    """
    out = out or sys.stdout
    cfg = api.cfg
    settings = cfg.setup
    git_url = git_url or (None if source else settings.git_url)
    git_ref = git_ref or (settings.git_ref if git_url == settings.git_url else None)
    if source and git_url:
        raise ConfigError("give --source or --git, not both")
    src = None if git_url else (Path(source) if source else remote.default_source())
    manifest = None if src is None else remote.source_manifest(src)
    if hosts_file:
        entries = hostfile.read_addresses(hosts_file)
        hosts = hostfile.make_hosts(entries, slots=cfg.worker_slots,
                                    coordinator_slots=cfg.coordinator_slots,
                                    origin=f"--hosts {hosts_file}")
        targets = [h.address for h in hosts]
    else:
        instances = running_hosts(api)
        targets = [a for i in instances if (a := i.address(cfg.ssh_address)) is not None]
        hosts = host_list(cfg, instances) if instances else []
    ssh = ssh_of(cfg)
    limit = timeout or max(cfg.command_timeout, 1800.0)
    what = f"git {git_url}" + (f" at {git_ref}" if git_ref else "") if git_url else str(src)
    if manifest is not None:
        what += f" ({len(manifest.files)} files listed by {manifest.how})"
    if api.dry_run:
        print(f"[dry-run] would install gdcode from {what} into {settings.venv} on "
              f"{', '.join(targets) or 'every running host'}", file=out)
        if manifest is not None:
            print_manifest(manifest, out)
        return 0
    if manifest is not None and manifest.excluded:
        print(f"not sending {len(manifest.excluded)} credential-looking file(s): "
              f"{', '.join(name for name, _ in manifest.excluded)} (--dry-run lists every file)",
              file=out)
    print(f"installing gdcode from {what} into {settings.venv} on {len(targets)} host(s)",
          file=out)
    results = remote.setup_hosts(ssh, targets, settings, limit, source=src, git_url=git_url,
                                 git_ref=git_ref, manifest=manifest)
    code = remote.report(results, out, what="setup")
    if code != 0:
        return code
    if trust and len(targets) > 1:
        print("letting the coordinator ssh to every host (for mpiexec)", file=out)
        peers = [h.address for h in hosts]
        code = remote.report(remote.trust_hosts(ssh, targets[0], targets, peers, cfg.name,
                                                cfg.command_timeout), out, what="ssh trust",
                             show_output=False)
        if code != 0:
            return code
    files = hostfile_texts(cfg, hosts, settings.hostfile_dir.replace("~", "$HOME", 1))
    r = remote.upload_text(ssh, targets[0], files, settings.hostfile_dir, cfg.command_timeout)
    if r.returncode != 0:
        print(f"copying the hostfiles to {targets[0]} failed (exit {r.returncode}): "
              f"{r.stderr.strip()}", file=out)
        return 1
    print(f"wrote {', '.join(files)} into {settings.hostfile_dir} on the coordinator "
          f"{targets[0]}", file=out)
    return 0


def collect_runs(api: Api, remote_dir: str, dest: Path, hosts_file: str | None = None,
                 timeout: float | None = None, out: TextIO | None = None) -> list[str]:
    """Copy a directory of run directories from the coordinator into ``dest``."""
    out = out or sys.stdout
    targets = _targets(api, hosts_file)
    if api.dry_run:
        print(f"[dry-run] would copy {remote_dir} from the coordinator into {dest}", file=out)
        return []
    names = remote.collect(ssh_of(api.cfg), targets[0], remote_dir, dest,
                           timeout or api.cfg.command_timeout)
    print(f"copied {remote_dir} from {targets[0]} into {dest}: {len(names)} entr"
          f"{'y' if len(names) == 1 else 'ies'}", file=out)
    for n in names:
        print(f"  {n}", file=out)
    return names


def terminate(api: Api, yes: bool = False, wait: bool = False,
              ask: Callable[[str], str] = input, out: TextIO | None = None) -> int:
    """Terminate the cluster's instances (its name and id), after confirmation.

    Parameters
    ----------
    api : Api
    yes : bool
        Do not ask.
    wait : bool
        Wait until they are terminated.
    ask : callable
        Reads the answer to the confirmation prompt (default :func:`input`).
    out : text stream, optional

    Returns
    -------
    int
        0 when terminated (or nothing to terminate), 1 when the user declined.
    """
    out = out or sys.stdout
    cfg = api.cfg
    check_region(cfg.region)
    cluster_id = api.cluster_id()
    instances = find_instances(api)
    if api.dry_run:
        api.call("terminate_instances",
                 InstanceIds=[f"<each instance tagged {TAG_CLUSTER}={cfg.name} and "
                              f"{TAG_CLUSTER_ID}={cluster_id}>"])
        return 0
    if not instances:
        print(f"cluster {cfg.name}: no live instances in {cfg.region}; nothing to terminate",
              file=out)
        return 0
    strangers = [i.id for i in instances
                 if i.cluster != cfg.name or i.cluster_id != cluster_id]
    if strangers:  # find_instances keeps only this cluster's; never terminate anything else
        raise ClusterError(f"instances {', '.join(strangers)} are not tagged {cfg.name} with "
                           f"cluster id {cluster_id}")
    print_instances(instances, out)
    if not yes:
        try:
            answer = ask(f"terminate these {len(instances)} instance(s) of cluster {cfg.name}? "
                         "[y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing terminated (answer y, or pass --yes)", file=out)
            return 1
    ids = [i.id for i in instances]
    api.call("terminate_instances", InstanceIds=ids)
    print(f"terminating {len(ids)} instance(s): {', '.join(ids)}", file=out)
    if wait:
        api.wait("instance_terminated", InstanceIds=ids)
        print("terminated", file=out)
    return 0


# --- command line --------------------------------------------------------------------------

ACTIONS = ("launch", "status", "hosts", "setup", "run", "collect", "terminate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gdcode ec2`` options (also those of ``tools/ec2.py``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=None, metavar="FILE",
                        help="cluster config (TOML; see tools/ec2.example.toml; default "
                             f"{DEFAULT_CONFIG}; run, setup and collect with --hosts need none)")
    common.add_argument("--dry-run", action="store_true",
                        help="print the AWS API calls instead of making them")
    common.add_argument("--ssh", metavar="CMD", default=None,
                        help="ssh program and options (default: $GDCODE_SSH, else ssh_command "
                             "of the config, else ssh)")
    chosen = argparse.ArgumentParser(add_help=False, parents=[common])
    chosen.add_argument("--cluster-id", metavar="ID", default=None,
                        help="the cluster's id (its gdcode:cluster-id tag); default the one "
                             "recorded locally by launch")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("launch", parents=[common], help="start the coordinator and the workers")
    sub.add_parser("status", parents=[chosen], help="show the cluster's instances")
    p = sub.add_parser("hosts", parents=[chosen],
                       help="write hostfile.mpich, hostfile.openmpi and hosts.txt")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the files (default: cluster-NAME)")
    p = sub.add_parser("setup", parents=[chosen],
                       help="install gdcode into the same virtual environment on every host")
    p.add_argument("--source", metavar="DIR", help="local checkout to install (default: this one)")
    p.add_argument("--git", metavar="URL", help="install from this git URL instead")
    p.add_argument("--ref", metavar="REF", help="branch, tag or commit of --git")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per host (default max(command_timeout, 1800))")
    p.add_argument("--hosts", dest="hosts_file", metavar="FILE",
                   help="set up these hosts (one address a line, coordinator first) "
                        "instead of asking EC2")
    p.add_argument("--no-trust", dest="trust", action="store_false",
                   help="do not set up ssh from the coordinator to the other hosts")
    p = sub.add_parser("run", parents=[chosen], help="run a command on every host over ssh")
    p.add_argument("--on", choices=("all", "coordinator", "workers"), default="all",
                   help="which hosts (default all)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per host (default: command_timeout of the config)")
    p.add_argument("--hosts", dest="hosts_file", metavar="FILE",
                   help="run on these hosts (one address a line) instead of asking EC2")
    p.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="-- then the command, given to each host's shell as ssh does")
    p = sub.add_parser("collect", parents=[chosen],
                       help="copy run directories from the coordinator")
    p.add_argument("--remote", default="results", metavar="DIR",
                   help="directory on the coordinator, relative to its home (default results)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="local directory to copy into (default cluster-NAME)")
    p.add_argument("--timeout", type=float, default=None, metavar="S")
    p.add_argument("--hosts", dest="hosts_file", metavar="FILE",
                   help="take the coordinator from this address list instead of EC2")
    p = sub.add_parser("terminate", parents=[chosen],
                       help="terminate the cluster's instances (its name and id)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--wait", action="store_true", help="wait until they are terminated")


def load_config(args: argparse.Namespace) -> ClusterConfig:
    """The config of ``--config``, with the ssh command of ``--ssh`` or ``$GDCODE_SSH``.

    Without ``--config`` it is ``ec2.toml`` of the current directory; when that does not
    exist and the action has ``--hosts FILE`` (run, setup, collect), the defaults of
    :func:`ec2config.for_hosts_file` stand in, since a hosts file is all those need.
    """
    from gdcode.cluster import ec2config

    path = args.config
    if path is None and getattr(args, "hosts_file", None) and not Path(DEFAULT_CONFIG).exists():
        cfg = ec2config.for_hosts_file(args.hosts_file)
    else:
        cfg = ec2config.load(path or DEFAULT_CONFIG)
    return cfg.with_ssh_command(args.ssh or os.environ.get("GDCODE_SSH") or None)


def main(args: argparse.Namespace, api: Api | None = None) -> int:
    """Run one ``gdcode ec2`` action; :class:`ClusterError` becomes a message and exit 1."""
    try:
        cfg = load_config(args)
        api = api or Api(cfg, dry_run=args.dry_run,
                         cluster_id=getattr(args, "cluster_id", None))
        default_dir = Path(f"cluster-{cfg.name}")
        if args.action == "launch":
            launch(api)
        elif args.action == "status":
            status(api)
        elif args.action == "hosts":
            write_hosts(api, Path(args.out) if args.out else default_dir)
        elif args.action == "setup":
            return setup(api, source=args.source, git_url=args.git, git_ref=args.ref,
                         timeout=args.timeout, hosts_file=args.hosts_file, trust=args.trust)
        elif args.action == "run":
            command = list(args.remote_command)
            if command[:1] == ["--"]:
                command = command[1:]
            return run_command(api, command, on=args.on, timeout=args.timeout,
                               hosts_file=args.hosts_file)
        elif args.action == "collect":
            collect_runs(api, args.remote, Path(args.out) if args.out else default_dir,
                         hosts_file=args.hosts_file, timeout=args.timeout)
        elif args.action == "terminate":
            return terminate(api, yes=args.yes, wait=args.wait)
    except ClusterError as exc:
        print(f"gdcode ec2 {args.action}: error: {exc}", file=sys.stderr)
        return 1
    return 0

