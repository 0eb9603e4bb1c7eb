"""The EC2 tool, offline: AWS is moto's mock (never the network), ssh is a local stand-in."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from botocore.exceptions import ClientError  # noqa: E402

from gdcode.cli import main  # noqa: E402
from gdcode.cluster import ClusterError, ec2, ec2config, remote  # noqa: E402
from gdcode.errors import ConfigError  # noqa: E402

REGION = "us-east-1"
ZONE = "us-east-1a"
REPO = Path(__file__).resolve().parents[1]


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def ec2_state(tmp_path, monkeypatch):
    """Cluster state files go to a directory of the test's own, never the user's."""
    state = tmp_path / "ec2-state"
    monkeypatch.setenv(ec2.STATE_ENV, str(state))
    return state


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    """No real credentials, profiles or instance metadata can be found from here."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "GDCODE_SSH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(no_aws_env, monkeypatch):
    """moto's mock of EC2 with fake credentials; yields a client and a subnet and group of it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto.mock_aws():
        client = ec2.boto3_session(region=REGION).client("ec2")
        subnet = next(s["SubnetId"] for s in client.describe_subnets()["Subnets"]
                      if s["AvailabilityZone"] == ZONE)
        group = client.create_security_group(GroupName="gdcode-test",
                                             Description="test")["GroupId"]
        yield {"client": client, "subnet": subnet, "group": group}


def write_config(path: Path, aws: dict | None = None, **overrides) -> Path:
    """A cluster config file: 3 spot workers at most $0.05 an hour, in the mocked subnet."""
    data = {
        "name": "exp1", "region": REGION, "availability_zone": ZONE,
        "ami": "ami-0123456789abcdef0", "key_name": "k",
        "coordinator_type": "c5.xlarge", "worker_type": "c5.large", "workers": 3,
        "market": "spot", "spot_max_price": 0.05, "worker_slots": 2,
    }
    if aws:
        data.update(subnet=aws["subnet"], security_group=aws["group"])
    tables = {k: overrides.pop(k) for k in list(overrides) if isinstance(overrides[k], dict)}
    data.update(overrides)
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if v is not None]
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{_toml(k)} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def cluster_ids(client, name: str, states=("pending", "running")) -> list[str]:
    resp = client.describe_instances(Filters=[
        {"Name": "tag:gdcode:cluster", "Values": [name]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return sorted(i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"])


FAKE_SSH = '''\
"""Stand-in for ssh: runs the command here, in a home directory of its own for each host."""
import os, sys
args = sys.argv[1:]
log = os.path.join(os.environ["FAKE_SSH_ROOT"], "ssh.log")
with open(log, "a") as fh:
    fh.write(repr(args) + "\\n")
while args and args[0].startswith("-"):
    if args.pop(0) in ("-o", "-i", "-l", "-p", "-F", "-J"):
        args.pop(0)
host = args.pop(0).rpartition("@")[2]
home = os.path.join(os.environ["FAKE_SSH_ROOT"], host)
os.makedirs(home, exist_ok=True)
os.chdir(home)
env = dict(os.environ, HOME=home, FAKE_HOST=host)
os.execvpe("sh", ["sh", "-c", " ".join(args)], env)
'''


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """The stand-in ssh command (a string for --ssh / GDCODE_SSH) and its hosts' root."""
    root = tmp_path / "hosts"
    root.mkdir()
    script = tmp_path / "fake_ssh.py"
    script.write_text(FAKE_SSH)
    monkeypatch.setenv("FAKE_SSH_ROOT", str(root))
    return {"command": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
            "root": root}


# --- config --------------------------------------------------------------------------------

def test_example_config_parses():
    cfg = ec2config.load(REPO / "tools" / "ec2.example.toml")
    assert cfg.spot and cfg.spot_max_price == 0.05
    assert cfg.workers == 4 and cfg.setup.venv == "~/gdcode-venv"
    cfg.require_launch()


@pytest.mark.parametrize("overrides, message", [
    ({"name": "has space"}, "name"),
    ({"region": None}, "region must be set"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"market": "on-demand"}, "spot_max_price is set but market is 'on-demand'"),
    ({"spot_max_price": -1}, "positive number"),
    ({"workers": 0}, "workers must be a whole number >= 1"),
    ({"market": "reserved", "spot_max_price": None}, "market 'reserved' is not one of"),
    ({"setup": {"venv": "relative/venv"}}, "must be absolute or start with ~/"),
    ({"setup": {"source_dir": "~"}}, "too shallow"),
    ({"tags": {"gdcode:cluster": "other"}}, "reserved"),
])
def test_bad_config_is_a_clear_error(tmp_path, overrides, message):
    path = write_config(tmp_path / "c.toml", **overrides)
    with pytest.raises(ConfigError) as info:
        ec2config.load(path)
    assert message in str(info.value)


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["ec2", "status", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- cost ----------------------------------------------------------------------------------

def test_cost_uses_only_configured_prices(tmp_path):
    spot = ec2config.load(write_config(tmp_path / "a.toml"))
    total, text = ec2.hourly_cost(spot, ["c5.xlarge", "c5.large", "c5.large"])
    assert total == pytest.approx(0.15) and "at most $0.1500/hour" in text

    ondemand = ec2config.load(write_config(tmp_path / "b.toml", market="on-demand",
                                           spot_max_price=None))
    total, text = ec2.hourly_cost(ondemand, ["c5.xlarge", "c5.large"])
    assert total is None and text.startswith("price unknown")
    assert "c5.large, c5.xlarge" in text

    priced = ec2config.load(write_config(tmp_path / "c.toml", market="on-demand",
                                         spot_max_price=None,
                                         price_per_hour={"c5.xlarge": 0.2, "c5.large": 0.1}))
    total, text = ec2.hourly_cost(priced, ["c5.xlarge", "c5.large", "c5.large"])
    assert total == pytest.approx(0.4) and "$0.4000/hour" in text


# --- launch, status, hosts, terminate with moto ---------------------------------------------

def test_launch_status_hosts_terminate_round_trip(aws, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", aws, tags={"project": "gdcode-test"})
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "started 4 instance(s)" in out
    assert "at most $0.2000/hour: 4 spot instance(s)" in out
    client = aws["client"]
    ids = cluster_ids(client, "exp1", states=("running",))
    assert len(ids) == 4

    resp = client.describe_instances(InstanceIds=ids)
    tags = [{t["Key"]: t["Value"] for t in i["Tags"]}
            for r in resp["Reservations"] for i in r["Instances"]]
    assert all(t["gdcode:cluster"] == "exp1" and t["project"] == "gdcode-test" for t in tags)
    state = json.loads(ec2.state_path(ec2config.load(cfg)).read_text())
    assert state["name"] == "exp1" and state["region"] == REGION
    assert len(state["cluster_id"]) == 32 and int(state["cluster_id"], 16) >= 0
    assert all(t["gdcode:cluster-id"] == state["cluster_id"] for t in tags)
    assert sorted(t["gdcode:role"] for t in tags) == ["coordinator", "worker", "worker", "worker"]
    assert sorted(int(t["gdcode:index"]) for t in tags) == [0, 1, 2, 3]

    assert main(["ec2", "status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("running") >= 4 and "4 of 4 instance(s) pending or running" in out

    hosts_dir = tmp_path / "hosts"
    assert main(["ec2", "hosts", "-c", str(cfg), "--out", str(hosts_dir)]) == 0
    api = ec2.Api(ec2config.load(cfg))
    instances = ec2.find_instances(api, states=("running",))
    assert [i.role for i in instances] == ["coordinator", "worker", "worker", "worker"]
    assert [i.index for i in instances] == [0, 1, 2, 3]
    private = [i.private_ip for i in instances]
    lines = lambda name: [x for x in (hosts_dir / name).read_text().splitlines()  # noqa: E731
                          if not x.startswith("#")]
    assert lines("hostfile.mpich") == [f"{private[0]}:1"] + [f"{p}:2" for p in private[1:]]
    assert lines("hostfile.openmpi") == [f"{private[0]} slots=1"] + \
        [f"{p} slots=2" for p in private[1:]]
    assert lines("hosts.txt") == private
    assert "-n 7 python -m mpi4py -m gdcode run --workers 6" in \
        (hosts_dir / "hostfile.mpich").read_text()

    assert main(["ec2", "terminate", "-c", str(cfg), "--yes"]) == 0
    assert cluster_ids(client, "exp1") == []
    assert sorted(cluster_ids(client, "exp1", states=("shutting-down", "terminated"))) == ids
    capsys.readouterr()
    assert main(["ec2", "terminate", "-c", str(cfg), "--yes"]) == 0
    assert "nothing to terminate" in capsys.readouterr().out


def test_spot_options_are_passed_through(aws, tmp_path):
    cfg = ec2config.load(write_config(tmp_path / "c.toml", aws, workers=2))
    api = ec2.Api(cfg)
    instances = ec2.launch(api, out=io.StringIO())
    runs = [kw for op, kw in api.calls if op == "run_instances"]
    assert [kw["InstanceType"] for kw in runs] == ["c5.xlarge", "c5.large"]
    for kw in runs:
        assert kw["InstanceMarketOptions"] == {
            "MarketType": "spot",
            "SpotOptions": {"MaxPrice": "0.05", "SpotInstanceType": "one-time",
                            "InstanceInterruptionBehavior": "terminate"}}
        assert kw["Placement"] == {"AvailabilityZone": ZONE}
        assert kw["SubnetId"] == aws["subnet"] and kw["SecurityGroupIds"] == [aws["group"]]
    assert [i.lifecycle for i in instances] == ["spot"] * 3


def test_on_demand_requests_no_market_options(aws, tmp_path):
    cfg = ec2config.load(write_config(tmp_path / "c.toml", aws, workers=1, market="on-demand",
                                      spot_max_price=None, price_per_hour={"c5.large": 0.1}))
    api = ec2.Api(cfg)
    out = io.StringIO()
    instances = ec2.launch(api, out=out)
    assert all("InstanceMarketOptions" not in kw for op, kw in api.calls if op == "run_instances")
    assert [i.lifecycle for i in instances] == ["on-demand", "on-demand"]
    assert "price unknown: no price_per_hour for c5.xlarge" in out.getvalue()


def test_nfs_mount_goes_into_user_data(aws, tmp_path):
    cfg = ec2config.load(write_config(tmp_path / "c.toml", aws, workers=1,
                                      nfs={"server": "10.0.0.5:/export", "mount_point": "/data"}))
    instances = ec2.launch(ec2.Api(cfg), out=io.StringIO())
    raw = aws["client"].describe_instance_attribute(InstanceId=instances[1].id,
                                                    Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(raw).decode()
    assert "'10.0.0.5:/export /data nfs4 " in script and "mount /data" in script


def test_terminate_never_touches_another_cluster(aws, tmp_path, capsys):
    mine = write_config(tmp_path / "mine.toml", aws, name="exp1", workers=1)
    theirs = write_config(tmp_path / "theirs.toml", aws, name="exp10", workers=2)
    assert main(["ec2", "launch", "-c", str(mine)]) == 0
    assert main(["ec2", "launch", "-c", str(theirs)]) == 0
    client = aws["client"]
    untagged = client.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1,
                                    InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    other_key = client.run_instances(
        ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": "exp1"}]}],
    )["Instances"][0]["InstanceId"]
    # the same name without an id: a cluster launched by an older gdcode, or by hand
    no_id = client.run_instances(
        ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "gdcode:cluster", "Value": "exp1"}]}],
    )["Instances"][0]["InstanceId"]
    theirs_ids = cluster_ids(client, "exp10")
    assert len(cluster_ids(client, "exp1")) == 3 and len(theirs_ids) == 3

    assert main(["ec2", "terminate", "-c", str(mine), "--yes"]) == 0
    assert cluster_ids(client, "exp1") == [no_id]
    assert cluster_ids(client, "exp10") == theirs_ids
    states = {i["InstanceId"]: i["State"]["Name"]
              for r in client.describe_instances(InstanceIds=[untagged, other_key])["Reservations"]
              for i in r["Instances"]}
    assert set(states.values()) <= {"pending", "running"}


def ids_of_cluster(client, cluster_id: str, states=("pending", "running")) -> list[str]:
    resp = client.describe_instances(Filters=[
        {"Name": "tag:gdcode:cluster-id", "Values": [cluster_id]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return sorted(i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"])


def test_two_clusters_of_one_name_never_touch_each_other(aws, tmp_path, capsys, monkeypatch):
    """Alice and Bob launch the same config (same name, same account) from two machines."""
    cfg = write_config(tmp_path / "c.toml", aws, workers=2)
    client = aws["client"]
    state = {who: tmp_path / f"state-{who}" for who in ("alice", "bob")}

    def as_user(who: str, *argv: str) -> int:
        monkeypatch.setenv(ec2.STATE_ENV, str(state[who]))
        return main(["ec2", argv[0], "-c", str(cfg), *argv[1:]])

    assert as_user("alice", "launch") == 0
    capsys.readouterr()
    assert as_user("bob", "launch") == 0
    assert "note: 3 other instance(s) in us-east-1 are tagged gdcode:cluster=exp1" in \
        capsys.readouterr().out
    cid = {who: json.loads((state[who] / REGION / "exp1.json").read_text())["cluster_id"]
           for who in state}
    assert cid["alice"] != cid["bob"]
    alice, bob = ids_of_cluster(client, cid["alice"]), ids_of_cluster(client, cid["bob"])
    assert len(alice) == len(bob) == 3 and len(cluster_ids(client, "exp1")) == 6

    # each one's status and hostfiles list only their own instances
    assert as_user("bob", "status") == 0
    out = capsys.readouterr().out
    assert all(i in out for i in bob) and not any(i in out for i in alice)
    assert f"cluster exp1 (id {cid['bob']}): 3 of 3 instance(s)" in out
    assert as_user("bob", "hosts", "--out", str(tmp_path / "bob-hosts")) == 0
    resp = client.describe_instances(InstanceIds=alice)
    alice_ips = {i["PrivateIpAddress"] for r in resp["Reservations"] for i in r["Instances"]}
    bob_hosts = (tmp_path / "bob-hosts" / "hosts.txt").read_text().split()
    assert len(bob_hosts) == 3 and not alice_ips & set(bob_hosts)
    # a second launch by Alice is refused: her cluster still runs
    assert as_user("alice", "launch") == 1

    assert as_user("alice", "terminate", "--yes") == 0
    assert ids_of_cluster(client, cid["alice"]) == []
    assert ids_of_cluster(client, cid["bob"]) == bob
    assert ids_of_cluster(client, cid["alice"], states=("shutting-down", "terminated")) == alice
    capsys.readouterr()
    assert as_user("bob", "status") == 0
    assert "3 of 3 instance(s) pending or running" in capsys.readouterr().out


def test_without_a_recorded_id_every_action_refuses(aws, fake_ssh, tmp_path, capsys,
                                                    ec2_state):
    cfg = write_config(tmp_path / "c.toml", aws, workers=1, ssh_command=fake_ssh["command"])
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    state_file = ec2.state_path(ec2config.load(cfg))
    cid = json.loads(state_file.read_text())["cluster_id"]
    state_file.unlink()  # as on a machine that did not launch the cluster
    capsys.readouterr()
    for action in (["status"], ["hosts"], ["setup"], ["run", "--", "true"], ["collect"],
                   ["terminate", "--yes"], ["terminate", "--dry-run"]):
        assert main(["ec2", action[0], "-c", str(cfg), *action[1:]]) == 2, action
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "\n" not in err, err  # one line
        assert err.startswith("gdcode ec2: error: no cluster id recorded for cluster exp1 in "
                              "us-east-1"), err
        assert str(state_file) in err and "--cluster-id ID" in err
    assert len(cluster_ids(aws["client"], "exp1")) == 2
    assert not (fake_ssh["root"] / "ssh.log").exists()
    # a malformed id is refused too
    assert main(["ec2", "status", "-c", str(cfg), "--cluster-id", "exp1"]) == 2
    assert "is not a cluster id" in capsys.readouterr().err
    # given the id, the actions work
    assert main(["ec2", "status", "-c", str(cfg), "--cluster-id", cid]) == 0
    assert "2 of 2 instance(s) pending or running" in capsys.readouterr().out
    assert main(["ec2", "terminate", "-c", str(cfg), "--cluster-id", cid, "--yes"]) == 0
    assert cluster_ids(aws["client"], "exp1") == []


def test_terminate_asks_first(aws, tmp_path, capsys):
    cfg = ec2config.load(write_config(tmp_path / "c.toml", aws, workers=1))
    ec2.launch(ec2.Api(cfg), out=io.StringIO())
    out = io.StringIO()
    assert ec2.terminate(ec2.Api(cfg), ask=lambda prompt: "n", out=out) == 1
    assert "nothing terminated" in out.getvalue()
    assert len(cluster_ids(aws["client"], "exp1")) == 2

    def eof(prompt):
        raise EOFError

    assert ec2.terminate(ec2.Api(cfg), ask=eof, out=io.StringIO()) == 1
    asked = []
    assert ec2.terminate(ec2.Api(cfg), ask=lambda p: asked.append(p) or "y",
                         out=io.StringIO()) == 0
    assert "terminate these 2 instance(s) of cluster exp1?" in asked[0]
    assert cluster_ids(aws["client"], "exp1") == []


def test_launch_refuses_a_cluster_that_exists(aws, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", aws, workers=1)
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    assert main(["ec2", "launch", "-c", str(cfg)]) == 1
    assert "already has 2 instance(s)" in capsys.readouterr().err
    assert len(cluster_ids(aws["client"], "exp1")) == 2


def test_dry_run_prints_calls_and_starts_nothing(aws, tmp_path, capsys, ec2_state):
    cfg = write_config(tmp_path / "c.toml", aws)
    assert main(["ec2", "launch", "-c", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("ec2(us-east-1).run_instances(") == 2
    assert '"MaxPrice": "0.05"' in out and "instance_running" in out
    assert '"gdcode:cluster-id"' in out and "would record cluster id" in out
    assert "would start 4 instance(s)" in out
    assert aws["client"].describe_instances()["Reservations"] == []
    assert not ec2_state.exists()  # a dry run records nothing
    # nothing launched, so no cluster id to terminate by: the dry run refuses as the real one would
    assert main(["ec2", "terminate", "-c", str(cfg), "--dry-run"]) == 2
    assert "no cluster id recorded for cluster exp1" in capsys.readouterr().err
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    cid = json.loads(ec2.state_path(ec2config.load(cfg)).read_text())["cluster_id"]
    capsys.readouterr()
    assert main(["ec2", "terminate", "-c", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "terminate_instances" in out and f"gdcode:cluster-id={cid}" in out
    assert len(cluster_ids(aws["client"], "exp1")) == 4


def test_dry_run_needs_no_credentials(no_aws_env, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml")
    assert main(["ec2", "launch", "-c", str(cfg), "--dry-run"]) == 0
    assert "run_instances" in capsys.readouterr().out
    # tools/ec2.py is the same tool
    res = subprocess.run([sys.executable, str(REPO / "tools" / "ec2.py"), "launch", "-c",
                          str(cfg), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(".run_instances(") == 2


# --- clear errors --------------------------------------------------------------------------

def test_missing_credentials_is_a_clear_error(no_aws_env, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml")
    assert main(["ec2", "status", "-c", str(cfg), "--cluster-id", "0" * 32]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials found" in err and "AWS_ACCESS_KEY_ID" in err
    assert "AWS_PROFILE" in err


def test_unknown_region_is_a_clear_error(no_aws_env, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", region="us-east-9")
    assert main(["ec2", "launch", "-c", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "region 'us-east-9' is not an EC2 region" in err and "us-east-1" in err


def test_unknown_instance_type_is_a_clear_error(aws, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", aws, worker_type="c5.huge")
    assert main(["ec2", "launch", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "InvalidInstanceType" in err and "c5.huge" in err and "worker_type" in err
    assert aws["client"].describe_instances()["Reservations"] == []


class Refusing:
    """A client that passes every call to moto's, except that RunInstances fails the n-th time."""

    def __init__(self, client, code: str, on_call: int = 1):
        self.client, self.code, self.on_call, self.runs = client, code, on_call, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def run_instances(self, **kwargs):
        self.runs += 1
        if self.runs == self.on_call:
            raise ClientError({"Error": {"Code": self.code, "Message": "refused by test"}},
                              "RunInstances")
        return self.client.run_instances(**kwargs)


@pytest.mark.parametrize("code, kind, advice", [
    ("InsufficientInstanceCapacity", ClusterError, "another availability zone"),
    ("SpotMaxPriceTooLow", ClusterError, "raise it"),
    ("MaxSpotInstanceCountExceeded", ClusterError, "spot instance quota"),
    ("InstanceLimitExceeded", ClusterError, "Service Quotas"),
    ("VcpuLimitExceeded", ClusterError, "vCPU quota"),
    ("Unsupported", ConfigError, "instance type and availability zone"),
])
def test_spot_and_quota_refusals_are_clear(aws, tmp_path, code, kind, advice):
    cfg = ec2config.load(write_config(tmp_path / "c.toml", aws, workers=1))
    api = ec2.Api(cfg, client=Refusing(aws["client"], code))
    with pytest.raises(kind) as info:
        ec2.launch(api, out=io.StringIO())
    assert code in str(info.value) and advice in str(info.value)


def test_refusal_after_a_partial_launch_names_what_runs(aws, tmp_path, capsys):
    cfg_path = write_config(tmp_path / "c.toml", aws, workers=2)
    cfg = ec2config.load(cfg_path)
    api = ec2.Api(cfg, client=Refusing(aws["client"], "MaxSpotInstanceCountExceeded", 2))
    assert ec2.main(ec2_args("launch", cfg_path), api=api) == 1
    err = capsys.readouterr().err
    started = cluster_ids(aws["client"], "exp1")
    assert len(started) == 1 and started[0] in err and "gdcode ec2 terminate" in err
    assert main(["ec2", "terminate", "-c", str(cfg_path), "--yes"]) == 0
    assert cluster_ids(aws["client"], "exp1") == []


def ec2_args(*argv) -> object:
    import argparse

    parser = argparse.ArgumentParser()
    ec2.add_arguments(parser)
    return parser.parse_args([str(a) for a in (*argv[:1], "-c", *argv[1:])])


# --- run, setup and collect over a stand-in ssh -----------------------------------------------

def test_run_reports_each_hosts_exit_code(fake_ssh, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("alpha\nbeta\ngamma\n")
    code = main(["ec2", "run", "-c", str(cfg), "--ssh", fake_ssh["command"], "--hosts",
                 str(hosts), "--", 'echo "on $FAKE_HOST"; test "$FAKE_HOST" != beta'])
    out = capsys.readouterr().out
    assert code == 1
    assert "on alpha" in out and "on gamma" in out
    table = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.split()[:1] in (["alpha"], ["beta"], ["gamma"])}
    assert table == {"alpha": "0", "beta": "1", "gamma": "0"}
    assert "command failed on 1 of 3 host(s): beta" in out


def test_run_times_out_per_host(fake_ssh, tmp_path, monkeypatch):
    monkeypatch.setenv("GDCODE_SSH", fake_ssh["command"])
    cfg = ec2config.load(write_config(tmp_path / "c.toml", command_timeout=30))
    cfg = cfg.with_ssh_command(os.environ["GDCODE_SSH"])
    results = remote.run_on_hosts(ec2.ssh_of(cfg), ["fast", "slow"],
                                  'if [ "$FAKE_HOST" = slow ]; then sleep 30; fi', timeout=1.0)
    assert [(r.host, r.returncode, r.timed_out) for r in results] == [
        ("fast", 0, False), ("slow", remote.TIMEOUT_EXIT, True)]
    assert results[1].seconds < 10


def test_run_on_the_ec2_cluster_uses_its_addresses(aws, fake_ssh, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", aws, workers=2, ssh_user="ubuntu",
                       ssh_command=fake_ssh["command"])
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["ec2", "run", "-c", str(cfg), "--on", "workers", "--", "echo", "$FAKE_HOST"]) == 0
    out = capsys.readouterr().out
    instances = ec2.find_instances(ec2.Api(ec2config.load(cfg)), states=("running",))
    for inst in instances[1:]:
        assert f"==> {inst.public_ip} <==\n{inst.public_ip}\n" in out
    assert instances[0].public_ip not in out
    log = (fake_ssh["root"] / "ssh.log").read_text()
    assert f"ubuntu@{instances[1].public_ip}" in log and "BatchMode=yes" in log


def make_package(root: Path, marker: str) -> Path:
    """A tiny source tree named gdcode, built offline by an in-tree PEP 517 backend."""
    (root / "gdcode").mkdir(parents=True, exist_ok=True)
    (root / "gdcode" / "__init__.py").write_text(f'__version__ = "0.0.1.dev0"\nMARK = "{marker}"\n')
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]

        [project]
        name = "gdcode"
        version = "0.0.1.dev0"
        """))
    (root / "backend.py").write_text(textwrap.dedent('''\
        import base64, hashlib, os, zipfile

        NAME, VERSION = "gdcode", "0.0.1.dev0"
        DIST = f"{NAME}-{VERSION}.dist-info"


        def get_requires_for_build_wheel(config_settings=None):
            return []


        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            files = {}
            for name in sorted(os.listdir(NAME)):
                if name.endswith(".py"):
                    with open(os.path.join(NAME, name), "rb") as fh:
                        files[f"{NAME}/{name}"] = fh.read()
            files[f"{DIST}/METADATA"] = (f"Metadata-Version: 2.1\\nName: {NAME}\\n"
                                         f"Version: {VERSION}\\n").encode()
            files[f"{DIST}/WHEEL"] = (b"Wheel-Version: 1.0\\nGenerator: test\\n"
                                      b"Root-Is-Purelib: true\\nTag: py3-none-any\\n")
            record = []
            for path, data in files.items():
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                record.append(f"{path},sha256={digest.decode()},{len(data)}")
            record.append(f"{DIST}/RECORD,,")
            files[f"{DIST}/RECORD"] = ("\\n".join(record) + "\\n").encode()
            wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
            with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
                for path, data in files.items():
                    zf.writestr(path, data)
            return wheel
        '''))
    return root


def git_commit_all(root: Path, force: bool = False) -> Path:
    """Make ``root`` a git repository with every file in it committed (``force``: ignored too)."""
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", *(["-f"] if force else []), "."], check=True)
    subprocess.run([*git, "commit", "-qm", "tiny package"], check=True)
    return root


def test_setup_installs_the_same_venv_everywhere(aws, fake_ssh, tmp_path, capsys):
    """Ships a source, creates each venv, pip-installs into it, trusts, copies hostfiles.

    The source is a tiny package (so pip builds it offline in a second), installed by the same
    code path as a gdcode checkout; a second setup from a git URL, given the hosts as a file,
    reuses the venvs.
    """
    src = make_package(tmp_path / "src", "from-checkout")
    (src / "secret.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    (src / ".env").write_text("AWS_SECRET_ACCESS_KEY=x\n")
    git_commit_all(src, force=True)
    cfg = write_config(tmp_path / "c.toml", aws, workers=1, ssh_command=fake_ssh["command"],
                       worker_slots=3,
                       setup={"venv": "~/envs/gd", "source_dir": "~/src/gdcode",
                              "python": sys.executable,
                              "pip_args": ["--no-index", "--no-build-isolation", "--no-deps"]})
    assert main(["ec2", "launch", "-c", str(cfg)]) == 0
    coordinator, worker = ec2.find_instances(ec2.Api(ec2config.load(cfg)), states=("running",))
    assert main(["ec2", "setup", "-c", str(cfg), "--source", str(src)]) == 0
    out = capsys.readouterr().out
    assert "setup succeeded on all 2 host(s)" in out
    assert "not sending 2 credential-looking file(s): .env, secret.pem" in out
    root = fake_ssh["root"]
    homes = [root / coordinator.public_ip, root / worker.public_ip]
    for home in homes:  # the tracked files went, the credential-looking ones did not
        shipped = {p.name for p in (home / "src" / "gdcode").iterdir()}
        assert {"backend.py", "pyproject.toml", "gdcode"} <= shipped
        assert not {"secret.pem", ".env", ".git"} & shipped

    def marks():
        return [subprocess.run([str(home / "envs" / "gd" / "bin" / "python"), "-c",
                                "import gdcode; print(gdcode.MARK)"], capture_output=True,
                               text=True, cwd=tmp_path).stdout.strip() for home in homes]

    assert marks() == ["from-checkout", "from-checkout"]
    assert all((home / "src" / "gdcode" / "backend.py").is_file() for home in homes)
    # the coordinator reaches every host at its private address, and has the hostfiles
    key = (homes[0] / ".ssh" / "id_ed25519.pub").read_text().strip()
    for home in homes:
        assert key in (home / ".ssh" / "authorized_keys").read_text().splitlines()
    assert f"Host {coordinator.private_ip} {worker.private_ip}\n    StrictHostKeyChecking " \
        "accept-new" in (homes[0] / ".ssh" / "config").read_text()
    mpich = (homes[0] / "hostfile.mpich").read_text()
    assert [x for x in mpich.splitlines() if not x.startswith("#")] == [
        f"{coordinator.private_ip}:1", f"{worker.private_ip}:3"]
    assert "mpiexec -f $HOME/hostfile.mpich -n 4 " in mpich
    assert (homes[0] / "hosts.txt").read_text() == \
        f"{coordinator.private_ip}\n{worker.private_ip}\n"

    repo = git_commit_all(make_package(tmp_path / "repo", "from-git"))
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"{coordinator.public_ip}\n{worker.public_ip}\n")
    assert main(["ec2", "setup", "-c", str(cfg), "--hosts", str(hosts), "--git", str(repo),
                 "--no-trust"]) == 0
    assert marks() == ["from-git", "from-git"]


def test_setup_reports_a_failing_host(fake_ssh, tmp_path, capsys):
    src = make_package(tmp_path / "src", "x")
    cfg = write_config(tmp_path / "c.toml", ssh_command=fake_ssh["command"],
                       setup={"python": "/nonexistent/python3"})
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("alpha\n")
    assert main(["ec2", "setup", "-c", str(cfg), "--hosts", str(hosts), "--source", str(src)]) == 1
    assert "setup failed on 1 of 1 host(s): alpha" in capsys.readouterr().out


#: credential-looking files planted in a source tree -> what each stands for
PLANTED = {
    "secret.pem": "an EC2 key pair",
    ".env": "environment secrets",
    ".env.production": "environment secrets",
    "ec2.toml": "the user's cluster config",
    "tools/ec2.toml": "the user's cluster config, beside the example",
    "gdcode/deploy.key": "a private key inside the package",
    "tools/id_rsa": "an ssh key",
    "tools/id_ed25519.pub": "an ssh public key (its private half is next to it)",
    ".aws/config": "an AWS profile",
    "notes/aws_credentials.txt": "credentials",
    "gdcode/.netrc": "login passwords",
    "backup/store.p12": "a key store",
    "backup/store.pfx": "a key store",
    "vault.kdbx": "a password database",
    "kernels/client_secret.json": "an OAuth secret",
}


def tree_with_secrets(root: Path) -> Path:
    """The tiny package plus the shipped example config and every :data:`PLANTED` file."""
    make_package(root, "x")
    (root / "tools").mkdir()
    (root / "tools" / "ec2.example.toml").write_text('name = "example"\n')
    (root / "kernels").mkdir()
    (root / "kernels" / "linear.pyx").write_text("# kernel\n")
    for name in PLANTED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not for other machines\n")
    return root


def archive_names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return set(tar.getnames())


def test_manifest_never_ships_credentials_even_when_tracked(tmp_path):
    root = git_commit_all(tree_with_secrets(tmp_path / "repo"), force=True)
    tracked = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.split()
    assert set(PLANTED) <= set(tracked)
    (root / "untracked.py").write_text("print('not committed')\n")
    manifest = remote.source_manifest(root)
    assert manifest.how == "git ls-files" and manifest.untracked == 1
    assert set(manifest.files) == {"pyproject.toml", "backend.py", "gdcode/__init__.py",
                                   "tools/ec2.example.toml", "kernels/linear.pyx"}
    assert dict(manifest.excluded).keys() == set(PLANTED)
    assert all("matches " in why for _, why in manifest.excluded)
    assert archive_names(remote.source_archive(root)) == set(manifest.files)


def test_manifest_outside_git_lists_only_the_source_tree(tmp_path):
    root = tree_with_secrets(tmp_path / "tree")  # an unpacked sdist or a copied tree: no .git
    for junk in ("gdcode/__pycache__/x.cpython-311.pyc", "gdcode/kernels/linear.so",
                 "results/run-1/summary.json", "notes.txt", "tests/test_x.py",
                 ".venv/bin/python"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("x")
    for name in ("Makefile", "meson.build", "README.md"):
        (root / name).write_text("x")
    (root / "hostfiles").mkdir()
    (root / "hostfiles" / "localhost.mpich").write_text("localhost:4\n")
    manifest = remote.source_manifest(root)
    assert manifest.how == "manifest" and manifest.untracked == 0
    assert set(manifest.files) == {"pyproject.toml", "Makefile", "meson.build", "README.md",
                                   "gdcode/__init__.py", "tools/ec2.example.toml",
                                   "kernels/linear.pyx", "hostfiles/localhost.mpich"}
    # only candidates inside the manifest are listed as held back; the rest is never looked at
    assert dict(manifest.excluded).keys() == {
        n for n in PLANTED if n.split("/")[0] in remote.MANIFEST_DIRS}
    assert archive_names(remote.source_archive(root)) == set(manifest.files)


@pytest.mark.parametrize("name", [*PLANTED, "a/B/Secret.PEM", "x/.ssh/known_hosts",
                                  ".env.local", "deploy/prod.tfstate", "aws-credentials",
                                  ".gnupg/pubring.kbx", "home/.pypirc"])
def test_credential_looking_names(name):
    assert remote.credential_reason(name) is not None


@pytest.mark.parametrize("name", ["tools/ec2.example.toml", "gdcode/cluster/ec2.py",
                                  "kernels/rowops.h", "README.md", "hostfiles/localhost.mpich",
                                  "experiments/erasurehead.toml", "environment.yml",
                                  "gdcode/keys.py", "docs/pem-format.md"])
def test_ordinary_names_are_shipped(name):
    assert remote.credential_reason(name) is None


def test_setup_dry_run_lists_every_file_and_sends_nothing(fake_ssh, tmp_path, capsys,
                                                          monkeypatch):
    root = git_commit_all(tree_with_secrets(tmp_path / "repo"), force=True)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("alpha\nbeta\n")
    monkeypatch.chdir(tmp_path)  # no ec2.toml here: the hosts file is enough
    assert main(["ec2", "setup", "--ssh", fake_ssh["command"], "--hosts", str(hosts),
                 "--source", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    manifest = remote.source_manifest(root)
    sent = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("  send ")]
    assert sent == list(manifest.files)
    for name in PLANTED:
        assert f"  EXCLUDED  {name}  (credential-looking, matches " in out
    assert f"{len(manifest.files)} file(s) would be sent, {len(PLANTED)} excluded; nothing " \
        "was sent" in out
    assert "on alpha, beta" in out
    assert not (fake_ssh["root"] / "ssh.log").exists()
    assert list(fake_ssh["root"].iterdir()) == []


def test_this_checkout_ships_no_credential_looking_file():
    manifest = remote.source_manifest(REPO)
    assert manifest.excluded == ()
    assert {"pyproject.toml", "meson.build", "gdcode/cluster/ec2.py",
            "tools/ec2.example.toml"} <= set(manifest.files)


def test_source_archive_ships_the_checkout_files():
    with tarfile.open(fileobj=io.BytesIO(remote.source_archive(REPO)), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"pyproject.toml", "meson.build", "gdcode/cluster/ec2.py"} <= names
    assert not any(n.startswith((".venv/", ".git/", "build/")) for n in names)


def test_collect_copies_run_directories(fake_ssh, tmp_path, capsys):
    run = fake_ssh["root"] / "alpha" / "results" / "run-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "ok"}')
    cfg = write_config(tmp_path / "c.toml", ssh_command=fake_ssh["command"])
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("alpha\nbeta\n")
    dest = tmp_path / "fetched"
    assert main(["ec2", "collect", "-c", str(cfg), "--hosts", str(hosts), "--out", str(dest)]) == 0
    assert (dest / "results" / "run-1" / "summary.json").read_text() == '{"status": "ok"}'
    assert "run-1" in capsys.readouterr().out
    assert main(["ec2", "collect", "-c", str(cfg), "--hosts", str(hosts), "--remote", "nothing",
                 "--out", str(dest)]) == 1


def test_run_and_collect_need_only_a_hosts_file(fake_ssh, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ec2.toml, no --config
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("alpha\nbeta\n")
    run = fake_ssh["root"] / "alpha" / "results" / "run-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    ssh = ["--ssh", fake_ssh["command"]]
    assert main(["ec2", "run", *ssh, "--hosts", str(hosts), "--", "echo", "on $FAKE_HOST"]) == 0
    out = capsys.readouterr().out
    assert "on alpha" in out and "on beta" in out
    assert "command succeeded on all 2 host(s)" in out
    assert main(["ec2", "collect", *ssh, "--hosts", str(hosts)]) == 0
    assert (tmp_path / "cluster-hosts" / "results" / "run-1" / "summary.json").is_file()
    capsys.readouterr()
    # without --hosts the config is needed, and an explicit --config must exist
    assert main(["ec2", "run", *ssh, "--", "true"]) == 2
    assert "config file ec2.toml does not exist" in capsys.readouterr().err
    assert main(["ec2", "run", "-c", "none.toml", *ssh, "--hosts", str(hosts), "--", "true"]) == 2
    assert "config file none.toml does not exist" in capsys.readouterr().err


def test_gdcode_imports_and_explains_without_boto3(tmp_path):
    """boto3 is imported only on the EC2 paths; without it the tool says what to install."""
    cfg = write_config(tmp_path / "c.toml")
    code = textwrap.dedent(f"""\
        import sys
        sys.modules["boto3"] = None
        from gdcode.cli import main
        assert main(["hostfile", "--hosts", "a"]) == 0
        sys.exit(main(["ec2", "launch", "-c", {str(cfg)!r}, "--dry-run"]))
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stderr
    assert "pip install 'gdcode[ec2]'" in res.stderr
