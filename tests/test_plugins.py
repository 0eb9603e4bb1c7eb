"""Plug-ins: the package tests/plugins/gdcode_testplugins found by import path and by entry point.

The entry points are not pip-installed: a ``gdcode_testplugins-0.1.dist-info`` directory
written from the package's ``pyproject.toml`` is put on ``sys.path`` (or ``PYTHONPATH`` for
subprocesses) beside ``tests/plugins``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import cli, codes, delays, models, optim, problem, simulate
from gdcode.errors import ConfigError
from gdcode.options import RunOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLUGINS = Path(__file__).parent / "plugins"
REGISTRIES = (codes.CODES, models.MODELS, optim.UPDATES, delays.DELAYS)
PATHS = {"code": "gdcode_testplugins.codes:PairsCode", "model": "gdcode_testplugins.models:HuberRegression",
         "delay": "gdcode_testplugins.delays:Uniform", "update": "gdcode_testplugins.updates:ClippedGD"}
DIST = "gdcode-testplugins"


def write_dist_info(where: Path, name: str = "gdcode_testplugins", version: str = "0.1",
                    entry_points: dict[str, dict[str, str]] | None = None) -> Path:
    """A ``NAME-VERSION.dist-info`` in ``where`` declaring ``entry_points`` (default: the
    ``[project.entry-points]`` tables of tests/plugins/pyproject.toml)."""
    if entry_points is None:
        project = tomllib.loads((PLUGINS / "pyproject.toml").read_text())["project"]
        entry_points = project["entry-points"]
        dist_name = project["name"]
    else:
        dist_name = name.replace("_", "-")
    info = where / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = []
    for group, table in entry_points.items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in table.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return where


def clear_registries() -> None:
    for registry in REGISTRIES:
        registry.clear_plugin_cache()


@pytest.fixture
def importable(monkeypatch):
    """tests/plugins on sys.path: the plug-ins are importable, but no entry point declares them."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    clear_registries()
    yield
    clear_registries()


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """tests/plugins and a dist-info declaring its entry points on sys.path."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(write_dist_info(tmp_path / "site")))
    clear_registries()
    yield tmp_path / "site"
    clear_registries()


def _cli_out(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    return buf.getvalue()


# ----------------------------------------------------------------------------- import paths


def test_without_plugins_no_registry_lists_them():
    clear_registries()
    for registry in REGISTRIES:
        assert registry.plugins() == []
    assert "pairs" not in codes.names() and "uniform" not in delays.names()


def test_every_registry_finds_its_plugin_by_import_path(importable):
    assert "pairs" not in codes.names()  # no entry point without the dist-info
    code = codes.build(PATHS["code"], n_workers=4, n_stragglers=1, seed=2, shuffle=True)
    assert code.options == {"shuffle": True} and code.n_partitions == 4
    assert codes.accepted_options(PATHS["code"]) == {"shuffle"}
    assert codes.describe(PATHS["code"]).startswith("Pairs:")
    assert (PATHS["code"], "import path") in codes.CODES.plugins()
    assert codes.CODES.is_plugin(PATHS["code"]) and not codes.CODES.is_plugin("frc")

    model = models.get(PATHS["model"])
    assert model.task == "regression" and not model.supports_hogwild_threads
    assert list(models.MODELS.options(PATHS["model"])) == ["delta"]

    opt = optim.make(PATHS["update"], np.zeros(2), optim.Schedule(0.5), max_norm=2.0)
    assert opt.max_norm == 2.0 and optim.rule_options(PATHS["update"], {"max_norm": 3.0, "lr": 1}) == {"max_norm": 3.0}

    delay = delays.parse(PATHS["delay"] + ":0.1,0.3", seed=4, n_workers=3)
    assert delay.spec == PATHS["delay"] + ":0.1,0.3" and (delay.low, delay.high) == (0.1, 0.3)
    assert delays.parse(delay.spec, seed=4).draw(1, 2) == delay.draw(1, 2)
    assert 0.1 <= delay.draw(0, 1) <= 0.3


@pytest.mark.parametrize("registry, path", [(codes.CODES, "gdcode_testplugins.nothing_here:PairsCode"),
                                            (models.MODELS, "gdcode_testplugins.models:Nothing"),
                                            (optim.UPDATES, "gdcode_testplugins.updates:"),
                                            (delays.DELAYS, ":Uniform")])
def test_a_bad_import_path_names_it_and_how_to_write_one(importable, registry, path):
    with pytest.raises(ValueError) as info:
        registry.get(path)
    assert not isinstance(info.value, ConfigError)
    assert repr(path) in str(info.value) and "MODULE:CLASS" in str(info.value)


def test_plugin_delay_specs(importable):
    with pytest.raises(ValueError, match="LOW <= HIGH"):
        delays.parse(PATHS["delay"] + ":0.3,0.1")
    for bad in (PATHS["delay"], PATHS["delay"] + ":0.1", PATHS["delay"] + ":0.1,x", PATHS["delay"] + ":0,inf",
                "gdcode_testplugins.delays:Nothing:1", "gamma:1"):
        with pytest.raises(ValueError) as info:
            delays.parse(bad)
        assert not isinstance(info.value, ConfigError), bad


# ----------------------------------------------------------------------------- entry points


def test_every_registry_finds_its_plugin_by_entry_point(installed):
    expected = {codes.CODES: "pairs", models.MODELS: "huber", optim.UPDATES: "clipped-gd", delays.DELAYS: "uniform"}
    for registry, name in expected.items():
        assert name in registry.names()
        assert registry.is_plugin(name)
        assert (name, f"entry point {DIST}") in registry.plugins()
        assert registry.describe(name)
    code = codes.build("pairs", n_workers=6, n_stragglers=1)
    assert type(code).__name__ == "PairsCode" and code.name == "pairs"
    assert models.get("huber").name == "huber"
    assert isinstance(optim.make("clipped-gd", np.zeros(3), optim.Schedule(0.1)), optim.Optimizer)
    delay = delays.parse("uniform:0.2,0.4", n_workers=6)
    assert delay.spec == "uniform:0.2,0.4" and delay.describe() == {"spec": "uniform:0.2,0.4", "scale_with_load": False}
    assert "uniform:LOW,HIGH" in delays.forms()


def test_a_plugin_that_fails_to_import_is_named_with_its_error(installed, monkeypatch):
    broken = write_dist_info(installed.parent / "broken", name="broken_plugin",
                             entry_points={"gdcode.codes": {"broken": "gdcode_testplugins.nothing_here:Code"}})
    monkeypatch.syspath_prepend(str(broken))
    clear_registries()
    assert "broken" in codes.names()
    with pytest.raises(ValueError, match="'broken'.*broken-plugin.*ModuleNotFoundError"):
        codes.get_class("broken")
    listed = _cli_out(["codes", "--list"])
    assert "broken" in listed and "cannot be used" in listed
    assert cli.main(["codes", "broken"]) == 2


def test_gdcode_codes_list_and_info_show_the_plugins(installed):
    listed = _cli_out(["codes", "--list"])
    line = next(row for row in listed.splitlines() if row.startswith("pairs "))
    assert f"plug-in, entry point {DIST}" in line and "Pairs:" in line
    info = json.loads(_cli_out(["info", "--json"]))
    assert info["plug-ins"] == {
        "codes": [{"name": "pairs", "source": f"entry point {DIST}"}],
        "models": [{"name": "huber", "source": f"entry point {DIST}"}],
        "update rules": [{"name": "clipped-gd", "source": f"entry point {DIST}"}],
        "delay models": [{"name": "uniform", "source": f"entry point {DIST}"}],
        "modes": []}
    text = _cli_out(["info"])
    assert "plug-ins" in text and "pairs (entry point" in text


def test_run_options_resolve_with_plugins_and_refuse_bad_ones(installed, tmp_path):
    options = RunOptions(scheme="pairs", workers=4, stragglers=1, model="huber", update="clipped-gd",
                         delay="uniform:0.001,0.002", code_options="shuffle=true", out=str(tmp_path))
    built = problem.check(options)
    assert built.code.name == "pairs"
    tuned = problem.build(options.replace(model_options="delta=0.25", update_options="max_norm=2"))
    assert tuned.model.delta == 0.25 and tuned.optimizer().max_norm == 2
    for name, text in (("model_options", "nope=1"), ("update_options", "nope=1")):
        with pytest.raises(ConfigError) as info:
            problem.build(options.replace(**{name: text}))
        assert info.value.option == name
    for bad in ({"scheme": "pairs", "stragglers": 2}, {"model": "no_such_module:Model"},
                {"delay": "uniform:1"}, {"update": "clipped-gd", "lr": -1.0},
                {"mode": "hogwild", "update": "gd", "model": "huber", "threads": 2}):
        with pytest.raises(ConfigError):
            problem.check(options.replace(**bad))


# ----------------------------------------------------------------------------- the plug-ins themselves


def test_pairs_code_decodes_exactly_and_its_rule_matches_its_decode(importable):
    code = codes.build(PATHS["code"], n_workers=6, n_stragglers=1, seed=1, shuffle=True)
    for straggler in range(6):
        a = code.decode([w for w in range(6) if w != straggler])
        np.testing.assert_array_equal(code.combined(a), 1.0)
    arrivals = np.random.default_rng(0).exponential(1.0, (300, 6, 1))
    fast, method = simulate.decode_times(code, arrivals)
    slow, generic = simulate.decode_times(code, arrivals, generic=True)
    assert (method, generic) == ("vectorised", "generic")
    np.testing.assert_array_equal(fast, slow)
    assert simulate.closed_form_mean(code, delays.parse("exp:1")) is None


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_huber_gradient_matches_finite_differences(importable, layout):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5)) * 2
    y = rng.standard_normal(40)
    coef = rng.random(40)
    rows = sp.csr_matrix(X) if layout == "csr" else X
    model = models.get(PATHS["model"])
    w = rng.standard_normal(5)
    grad = np.zeros(5)
    loss = model.loss_grad_sum(rows, y, coef, w, grad)

    def f(v):
        return model.loss_grad_sum(rows, y, coef, v, np.zeros(5))

    assert loss == pytest.approx(f(w))
    numeric = [(f(w + 1e-6 * e) - f(w - 1e-6 * e)) / 2e-6 for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    assert set(model.test_metrics(X, y, w)) == {"test_loss", "test_rmse"}
    with pytest.raises(ValueError):
        models.get(PATHS["model"], compiled=True)


def test_uniform_delay_draws_in_bulk_by_replaying_its_draws(importable):
    model = delays.parse(PATHS["delay"] + ":0.1,0.2", seed=5, scale_with_load=True)
    load = np.array([0.5, 1.0, 0.25])
    bulk = simulate.sample_pauses(model, load, np.zeros((8, 3)), 8, first_iteration=3)
    replay = simulate.sample_pauses(model, load, np.zeros((8, 3)), 8, replay=True, first_iteration=3)
    np.testing.assert_array_equal(bulk, replay)


def test_clipped_gd_clips(importable):
    opt = optim.make(PATHS["update"], np.zeros(2), optim.Schedule(1.0), max_norm=1.0)
    opt.step(np.array([3.0, 4.0]))
    np.testing.assert_allclose(opt.params, [-0.6, -0.8])


def test_gdcode_simulate_with_plugins(installed):
    out = json.loads(_cli_out(["simulate", "--scheme", "pairs", "--workers", "4", "--stragglers", "1",
                               "--delay", "uniform:0.1,0.2", "--draws", "200", "--json"]))
    assert out["decode_method"] == "vectorised" and out["delay"] == "uniform:0.1,0.2"
    assert 0.1 <= out["mean_iteration_seconds"] <= 0.2


# ----------------------------------------------------------------------------- end to end


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["import path", "entry point"])
def test_gdcode_run_with_every_kind_of_plugin(how, tmp_path, monkeypatch):
    from e2e import run_mpi

    from gdcode.results import load_run

    paths = [str(PLUGINS)] if how == "import path" else [str(write_dist_info(tmp_path / "site")), str(PLUGINS)]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    if how == "import path":
        scheme, model, update, delay = PATHS["code"], PATHS["model"], PATHS["update"], PATHS["delay"] + ":0.001,0.002"
    else:
        scheme, model, update, delay = "pairs", "huber", "clipped-gd", "uniform:0.001,0.002"
    res = run_mpi(3, ["run", "--workers", "2", "--stragglers", "1", "--scheme", scheme, "--model", model,
                      "--update", update, "--delay", delay, "--dataset", "synthetic:400x10", "--iterations", "5",
                      "--out", str(tmp_path), "--name", "run", "--quiet"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    run = load_run(tmp_path / "run")
    opts = run.metadata["options"]
    assert (opts["scheme"], opts["model"], opts["update"], opts["delay"]) == (scheme, model, update, delay)
    assert run.metadata["delay"]["spec"] == delay and run.metadata["code"]["n_partitions"] == 2
    assert [m["iteration"] for m in run.metrics] == [0, 1, 2, 3, 4, 5]
    assert {"train_loss", "test_loss", "test_rmse"} <= set(run.metrics[-1])
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 5
