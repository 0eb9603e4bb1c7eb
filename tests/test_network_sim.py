"""The simulator's network: latency, bandwidth and the coordinator's link serialising replies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdcode import codes, delays, simulate
from gdcode.simulate import Network, parse_rate


@pytest.mark.parametrize("text, bytes_per_second", [("100mbit", 12.5e6), ("1gbit", 125e6), ("8000", 1000.0),
                                                     ("2mbps", 2e6), ("1.5GBIT", 187.5e6)])
def test_rates_in_tc_notation(text, bytes_per_second):
    assert parse_rate(text) == pytest.approx(bytes_per_second)


@pytest.mark.parametrize("text", ["fast", "-1mbit", "0gbit", "inf"])
def test_bad_rates(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_an_iteration_pays_the_shared_downlink_and_the_serialised_uplink():
    W, B, bw, lat = 3, 1000, 1e4, 0.01  # 0.1 s a message
    net = Network.parse(f"{lat},{bw * 8}", B)
    code = codes.build("uncoded", W)
    compute = np.array([[0.0, 0.05, 0.5]])
    arrivals = net.arrivals(code, compute, np.zeros((1, W)))[0, :, 0]
    start = lat + W * 0.1  # the models share the coordinator's link
    # worker 0 and 1 queue on the coordinator's link one after another; worker 2 comes after both
    np.testing.assert_allclose(arrivals, [start + lat + 0.1, start + lat + 0.2, start + 0.5 + lat + 0.1])


def test_the_network_slows_uncoded_more_than_a_code_that_waits_for_fewer():
    W, B = 6, 400_000
    net = Network.parse("0.0005,100mbit", B)
    delay = delays.parse("exp:0.05", seed=1)
    unc = simulate.simulate(codes.build("uncoded", W), delay, draws=2000, network=net).times.mean()
    ign = simulate.simulate(codes.build("ignore", W, 2), delay, draws=2000, network=net).times.mean()
    assert ign < unc
    assert unc > W * B / 12.5e6 * 2  # at least the downlink and the serialised uplink


def test_cli_network(capsys):
    from gdcode import cli

    assert cli.main(["simulate", "--scheme", "uncoded", "--workers", "3", "--delay", "none", "--network",
                     "0,100mbit", "--dataset", "synthetic:100x50000", "--draws", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    B = 8 * 50_004
    assert out["network"]["model_bytes"] == B
    assert out["mean_iteration_seconds"] == pytest.approx(6 * B / 12.5e6)
    assert cli.main(["simulate", "--scheme", "uncoded", "--network", "1mbit", "--message-bytes", "10"]) == 2
