"""End to end: every gradient code runs in the engine; exact codes follow uncoded's trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from gdcode import codes

pytestmark = pytest.mark.mpi

DATA = ("--dataset", "synthetic:1200x16", "--seed", "5")
EXACT = ["frc", "cyclic", "cyclic-mds", "partial-frc", "partial-cyclic"]


@pytest.fixture(scope="module")
def uncoded_losses(tmp_path_factory):
    from e2e import train_run

    return train_run(tmp_path_factory.mktemp("uncoded"), 4, "--iterations", "12", *DATA, name="u").column("train_loss")


@pytest.mark.parametrize("scheme", EXACT)
def test_exact_codes_reproduce_uncoded_trajectory(train, uncoded_losses, scheme):
    run = train(4, "--scheme", scheme, "--stragglers", "1", "--iterations", "12", *DATA, name=scheme)
    assert run.metadata["code"]["exact"] is True
    np.testing.assert_allclose(run.column("train_loss"), uncoded_losses, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scheme", ["frc", "cyclic-mds"])
def test_persistent_straggler_is_never_waited_for(train, uncoded_losses, scheme):
    run = train(4, "--scheme", scheme, "--stragglers", "1", "--iterations", "12", *DATA,
                "--delay", "persistent:1,10,0.01", name=scheme)
    slow = run.metadata["delay"]["slow_workers"][0]
    statuses = {r["status"] for r in run.workers if r["worker"] == slow}
    assert statuses <= {"cancelled", "late"}, statuses
    np.testing.assert_allclose(run.column("train_loss"), uncoded_losses, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scheme", sorted(set(codes.names()) - {"uncoded"}))
def test_every_code_runs_in_the_engine(train, scheme):
    workers, stragglers = (6, 2) if scheme in ("frc", "approx", "partial-frc") else (5, 1)
    extra = ["--batch-size", "200"] if scheme == "kbatch" else []
    run = train(workers, "--scheme", scheme, "--stragglers", str(stragglers), "--iterations", "4",
                "--delay", "exp:0.01", "--dataset", "synthetic:1200x8", "--track-gradient-error", *extra, name=scheme)
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 4
    errors = run.column("gradient_error")[1:]  # line 0 is the initial model
    if run.metadata["code"]["exact"]:
        assert np.all(errors < 1e-8)
    assert np.all(np.isfinite(run.column("train_loss")))
