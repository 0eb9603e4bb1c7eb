"""Run options and the MPI-free set-up: defaults, TOML, command-line precedence, checks before launch."""

import argparse
import math

import numpy as np
import pytest

from gdcode import options as opts
from gdcode import problem
from gdcode.errors import ConfigError, OptionError
from gdcode.options import RunOptions


def parse(*argv):
    p = argparse.ArgumentParser()
    opts.add_arguments(p)
    return opts.given(p.parse_args(list(argv)))


def test_defaults_toml_then_command_line(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('workers = 3\nlr = 0.1\ndelay = "exp:0.5"\n[sweep]\nscheme = ["a", "b"]\n')
    options = opts.from_sources(opts.load_toml(toml), parse("--lr", "0.2"))
    assert options.workers == 3 and options.lr == 0.2 and options.delay == "exp:0.5"
    assert options.iterations == 100  # default
    assert problem.check(options.replace(out=str(tmp_path / "out"))).options.workers == 3


def test_toml_under_run_table_and_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[run]\nintercept = true\n"test-fraction" = 0.0\n')
    options = opts.from_sources(opts.load_toml(toml))
    assert options.intercept is True and options.test_fraction == 0.0
    assert opts.from_sources(opts.load_toml(toml), parse("--no-intercept")).intercept is False


def test_options_round_trip_through_a_dict():
    options = RunOptions(workers=3, delay="exp:0.1", l2=0.5, name="x")
    assert RunOptions.from_dict(options.to_dict()) == options
    assert isinstance(RunOptions(lr=1).lr, float)


@pytest.mark.parametrize("text, option", [
    ("bogus = 1\n", "bogus"),
    ("workers = 'four'\n", "workers"),
    ("workers = 2.5\n", "workers"),
    ("workers = true\n", "workers"),  # a TOML boolean is not an integer
    ("lr = true\n", "lr"),
    ("lr = inf\n", "lr"),
    ("lr = nan\n", "lr"),
    ("seed = -1\n", "seed"),
    ("intercept = 1\n", "intercept"),
])
def test_bad_toml_values(tmp_path, text, option):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(OptionError) as info:
        opts.load_toml(toml)
    assert info.value.option == option


def test_invalid_or_missing_toml(tmp_path):
    (tmp_path / "c.toml").write_text("workers = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        opts.load_toml(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        opts.load_toml("no/such/file.toml")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
@pytest.mark.parametrize("option", ["lr", "l2", "target_loss", "timeout", "momentum", "test_fraction"])
def test_non_finite_numbers_are_refused(option, value):
    with pytest.raises(OptionError) as info:
        opts.from_sources(None, {option: value})
    assert info.value.option == option
    assert not math.isfinite(float(value))


def test_option_error_names_the_flag():
    with pytest.raises(OptionError) as info:
        opts.from_sources(None, {"lr_decay": "2"})
    assert info.value.flag_message().startswith("--lr-decay 2")
    assert str(info.value).startswith("lr_decay = 2.0")


@pytest.mark.parametrize("changes, option", [
    ({"workers": 0}, "workers"),
    ({"stragglers": 4}, "stragglers"),
    ({"iterations": -1}, "iterations"),
    ({"lr": 0.0}, "lr"),
    ({"l2": -1.0}, "l2"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"timeout": 0.0}, "timeout"),
    ({"collect": 9}, "collect"),
    ({"mode": "nope"}, "mode"),
    ({"scheme": "nope"}, "scheme"),
    ({"scheme": "uncoded", "collect": 2}, "collect"),
    ({"model": "softmax"}, "model"),  # synthetic data is binary
    ({"dataset": "synthetic:3x10", "workers": 4}, "dataset"),  # fewer rows than partitions
    ({"delay": "exp:-1"}, "delay"),
    ({"update": "nope"}, "update"),
    ({"code_options": "degree"}, "code_options"),
    ({"update": "sgd"}, "update"),
    ({"update": "momentum", "momentum": 1.5}, "momentum"),
    ({"model": "svm"}, "model"),
    ({"delay": "gamma:1"}, "delay"),
    ({"delay": "persistent:5,2"}, "delay"),  # more slow workers than workers
    ({"lr_schedule": "step", "lr_decay": 2.0}, "lr_decay"),
])
def test_check_refuses_bad_values(tmp_path, changes, option):
    with pytest.raises(OptionError) as info:
        problem.check(RunOptions(out=str(tmp_path)).replace(**changes))
    assert info.value.option == option


def test_check_refuses_unwritable_outputs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError) as info:
        problem.check(RunOptions(out=str(tmp_path / "file")))
    assert info.value.option == "out"
    with pytest.raises(OptionError) as info:
        problem.check(RunOptions(out=str(tmp_path), record_delays=str(tmp_path / "no" / "such" / "d.csv")))
    assert info.value.option == "record_delays"


def test_the_problem_is_built_once_with_the_code_bound_to_the_rows():
    built = problem.build(RunOptions(scheme="ignore", workers=4, stragglers=1, dataset="synthetic:402x5",
                                     test_fraction=0.0))
    assert built.code is not None and built.code.n_partitions == 4
    np.testing.assert_array_equal(built.partition_bounds(), [0, 101, 202, 302, 402])
    assert built.n_params == 5 and built.l2 == pytest.approx(1 / 402)
    X, y = built.rows(0, 10)
    assert X.shape == (10, 5) and y.shape == (10,)
    a, b = built.optimizer(), built.optimizer()
    assert a is not b and np.array_equal(a.params, built.w0)


@pytest.mark.parametrize("mode", ["hogwild", "gossip", "allreduce", "local"])
def test_other_modes_ignore_coded_options(tmp_path, mode):
    built = problem.check(RunOptions(out=str(tmp_path), mode=mode, scheme="frc-not-checked", stragglers=1))
    assert built.code is None and built.n_partitions == 4


@pytest.mark.parametrize("changes, option", [
    ({"mode": "hogwild", "update": "adam"}, "update"),
    ({"mode": "hogwild", "pull_every": 0}, "pull_every"),
    ({"mode": "hogwild", "max_staleness": -1}, "max_staleness"),
    ({"mode": "hogwild", "threads": 0}, "threads"),
    ({"mode": "gossip", "workers": 1}, "workers"),
    ({"mode": "gossip", "gossip_prob": 1.5}, "gossip_prob"),
    ({"mode": "gossip", "alpha": 0.0}, "alpha"),
    ({"mode": "gossip", "peer_timeout": 0.0}, "peer_timeout"),
    ({"mode": "gossip", "gossip_period": -2}, "gossip_period"),
    ({"mode": "gossip", "mixing": "average"}, "mixing"),
    ({"mode": "gossip", "interpolation": "x"}, "interpolation"),
    ({"mode": "local", "average_every": -1}, "average_every"),
    ({"mode": "allreduce", "batch_size": -3}, "batch_size"),
    ({"mode": "gossip", "eval_every": 0.0}, "eval_every"),
    ({"mode": "hogwild", "checkpoint_every": 5}, "checkpoint_every"),
    ({"mode": "local", "track_gradient_error": True}, "track_gradient_error"),
])
def test_mode_options_rejected(tmp_path, changes, option):
    with pytest.raises(OptionError) as info:
        problem.check(RunOptions(out=str(tmp_path)).replace(**changes))
    assert info.value.option == option


def test_fault_injection_takes_an_iteration_or_0_for_the_set_up():
    from gdcode.runtime.worker import parse_failure

    assert parse_failure("2:0", 4) == (2, 0) and parse_failure("3", 4) == (3, 1)
    for bad in ("2:-1", "0:1", "5:1", "two"):
        with pytest.raises(ValueError, match="W:T"):
            parse_failure(bad, 4)
