"""Bytes on the wire: what each rank hands MPI, by kind, per rank and per iteration."""

from __future__ import annotations

import numpy as np
import pytest

from gdcode.runtime import protocol as pr
from gdcode.runtime.traffic import KINDS, Traffic, kind_of, summarize


def test_kinds_come_from_the_header_or_the_tag():
    buf = pr.MODEL.new(3)
    pr.MODEL.pack(buf, pr.Kind.MODEL, 1)
    assert kind_of(buf, pr.Tag.CONTROL) == "model"
    assert kind_of(np.zeros(7), pr.Tag.RECORDS) == "records"
    assert kind_of(np.zeros(2), pr.Tag.ROOT) == "other"


def test_summary_adds_up_what_every_rank_sent_each_other():
    a, b = Traffic(3), Traffic(3)
    a.count_sent(1, "model", 80)
    a.count_sent(2, "model", 80)
    b.count_sent(0, "gradient", 64)
    a.count_received("gradient", 64)
    out = summarize({0: a.report(), 1: b.report()}, 3)
    assert out["sent"] == [160, 64, 0]
    assert out["received"] == [64, 80, 80]  # rank 2 reported nothing, yet what it got is known
    assert out["by_kind"]["sent"]["model"] == [160, 0, 0]
    assert out["reported"] == [0, 1]
    assert a.since_mark() == {"sent": {"model": 160}, "received": {"gradient": 64}}
    assert a.since_mark() == {"sent": {}, "received": {}}
    assert len(KINDS) == len(set(KINDS))


@pytest.mark.mpi
def test_a_coded_run_records_its_bytes(train):
    d, W, T = 20, 3, 4
    run = train(W, "--dataset", f"synthetic:300x{d}", "--iterations", str(T), "--scheme", "uncoded")
    b = run.summary["bytes"]
    message = 8 * pr.MODEL.size(d)
    assert b["by_kind"]["sent"]["model"][0] == T * W * message
    assert b["by_kind"]["sent"]["gradient"][1:] == [T * message] * W
    assert b["by_kind"]["received"]["gradient"][0] == T * W * message
    assert b["sent"][0] == b["received"][1] + b["received"][2] + b["received"][3]
    assert b["reported"] == [0, 1, 2, 3]
    assert run.metrics[0]["iteration"] == 0 and run.metrics[0]["bytes_sent"] == {}
    for line in run.metrics[1:]:
        assert line["bytes_sent"]["model"] == W * message
        assert line["bytes_received"]["gradient"] == W * message
