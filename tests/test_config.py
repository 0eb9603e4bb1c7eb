"""Run options: defaults, TOML, command-line precedence and validation (no MPI)."""

import argparse

import pytest

from gdcode import config
from gdcode.errors import ConfigError


def parse(*argv):
    p = argparse.ArgumentParser()
    config.add_run_arguments(p)
    return p.parse_args(list(argv))


def test_defaults_toml_then_command_line(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('workers = 3\nlr = 0.1\ndelay = "exp:0.5"\n[sweep]\nscheme = ["a", "b"]\n')
    values = config.merge(parse("--lr", "0.2"), config.load_toml(toml))
    assert values["workers"] == 3 and values["lr"] == 0.2 and values["delay"] == "exp:0.5"
    assert values["iterations"] == 100  # default
    cfg = config.resolve({**values, "out": str(tmp_path / "out")})
    assert cfg.workers == 3 and cfg.lr == 0.2


def test_toml_under_run_table_and_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[run]\nintercept = true\n"test-fraction" = 0.0\n')
    values = config.merge(None, config.load_toml(toml))
    assert values["intercept"] is True and values["test_fraction"] == 0.0
    assert config.merge(parse("--no-intercept"), config.load_toml(toml))["intercept"] is False


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown option 'bogus'"),
    ("workers = 'four'\n", "--workers 'four'"),
    ("workers = 2.5\n", "--workers 2.5"),
    ("workers = [\n", "not valid TOML"),
])
def test_bad_toml(tmp_path, text, message):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config.load_toml(toml)


def test_missing_toml():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load_toml("no/such/file.toml")


@pytest.mark.parametrize("overrides, message", [
    ({"workers": 0}, "--workers 0"),
    ({"stragglers": 4}, "0 <= S < W"),
    ({"iterations": -1}, "--iterations -1"),
    ({"lr": 0.0}, "--lr 0.0"),
    ({"l2": -1.0}, "--l2 -1.0"),
    ({"test_fraction": 1.0}, "--test-fraction"),
    ({"timeout": 0.0}, "--timeout"),
    ({"collect": 9}, "--collect 9"),
    ({"mode": "nope"}, "--mode 'nope'"),
    ({"scheme": "nope"}, "unknown code"),
    ({"scheme": "uncoded", "collect": 2}, "--collect applies to approximate codes"),
    ({"update": "sgd"}, "--update 'sgd'"),
    ({"update": "momentum", "momentum": 1.5}, "--momentum"),
    ({"model": "svm"}, "--model 'svm'"),
    ({"delay": "gamma:1"}, "--delay 'gamma:1'"),
    ({"delay": "persistent:5,2"}, "--delay 'persistent:5,2'"),
    ({"lr_schedule": "step", "lr_decay": 2.0}, "--lr-decay"),
])
def test_resolve_rejects_bad_values(tmp_path, overrides, message):
    values = config.merge(None, None, out=str(tmp_path), **overrides)
    with pytest.raises(ConfigError, match=message):
        config.resolve(values)
