"""The kernels' machine-tuned prefetch distances: results independent of them, the per-machine
cache (read, write, fallback, concurrent writers) and calibration."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest

from gdcode import kernels
from gdcode.kernels import calibrate, tuning

compiled_only = pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
linear = kernels._linear


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private cache directory, small calibration blocks, and the module's distances and
    tuning state restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(tuning.ENV_DISABLE, raising=False)
    monkeypatch.setattr(calibrate, "MIN_BYTES", 1 << 20)
    monkeypatch.setattr(calibrate, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(calibrate, "ROUNDS", 1)
    saved = linear.tuning() if linear is not None else None
    state = (tuning.source, tuning.detail)
    yield
    if saved is not None:
        linear.set_tuning(**saved)
    tuning.source, tuning.detail = state


# ----------------------------------------------------------------------------- parameters


@compiled_only
@pytest.mark.parametrize("bad", [{"dense_ahead_f64": -1}, {"csr_ahead": linear and linear.TUNING_MAX + 1},
                                 {"dense_ahead_f32": 1.5}, {"csr_ahead": True}, {"nonsense": 1},
                                 {"dense_ahead_f64": 64, "csr_ahead": "8"}])
def test_set_tuning_refuses_bad_values_and_sets_nothing(bad):
    before = linear.tuning()
    with pytest.raises(ValueError):
        linear.set_tuning(**bad)
    assert linear.tuning() == before


@compiled_only
def test_set_tuning_round_trip():
    setting = {"dense_ahead_f64": 0, "dense_ahead_f32": 12288, "csr_ahead": 64,
               "softmax_fused_kib": 5120, "softmax_chunk_kib": 0}
    linear.set_tuning(**setting)
    assert linear.tuning() == setting
    assert set(linear.DEFAULT_TUNING) == set(linear.TUNABLE)


def _all_outputs():
    """(loss, grad) of every loss-and-gradient kernel on dense float64, float32 and CSR
    blocks big enough for every code path (pipelines, interleaved copies; softmax CSR rows
    fused or in two passes, as the tuning says)."""
    rng = np.random.default_rng(20)
    import scipy.sparse as sp

    X = rng.standard_normal((257, 67))
    S = sp.random(400, 90, density=0.2, format="csr", random_state=rng)
    out = []
    for stem in ("logistic", "least_squares", "hinge", "softmax"):
        for layout, block in (("dense", X), ("dense", X.astype(np.float32)), ("csr", S)):
            n, p = block.shape
            y = (rng.integers(0, 5, n).astype(np.float64) if stem == "softmax"
                 else np.where(rng.random(n) < 0.5, -1.0, 1.0))
            w = rng.standard_normal((5, p) if stem == "softmax" else p) / np.sqrt(p)
            g = np.full_like(w, 0.25)
            fn = kernels.get(f"{stem}_{layout}", compiled=True)
            args = (block,) if layout == "dense" else (block.data, block.indices, block.indptr)
            loss = fn(*args, y, rng.random(n), w, g)
            out.append((loss, g))
    return out


@compiled_only
def test_results_do_not_depend_on_the_distances():
    """Bit for bit: prefetching changes when data arrives, never the arithmetic; softmax CSR
    rows in one fused pass or in two, in chunks of any size, add the same numbers in the same
    order."""
    linear.set_tuning(**{**linear.DEFAULT_TUNING, "softmax_fused_kib": linear.TUNING_MAX})
    want = _all_outputs()
    for setting in ({"dense_ahead_f64": 0, "dense_ahead_f32": 0, "csr_ahead": 0,
                     "softmax_fused_kib": 0, "softmax_chunk_kib": 0},
                    {"dense_ahead_f64": 16384, "dense_ahead_f32": 64, "csr_ahead": 1024,
                     "softmax_fused_kib": 0, "softmax_chunk_kib": 1},
                    {"softmax_chunk_kib": linear.TUNING_MAX}):
        linear.set_tuning(**setting)
        for (loss, g), (loss0, g0) in zip(_all_outputs(), want, strict=True):
            assert loss == loss0
            np.testing.assert_array_equal(g, g0)


# ----------------------------------------------------------------------------- the cache


def _key(digest="abc"):
    return {"cpu": {"model": "test CPU"}, "cpus": 3, "gdcode": "0", "kernels": digest}


def test_cache_write_then_read(tmp_path):
    key = _key()
    path = tuning.write(key, {"csr_ahead": 128}, {"csr_ahead": {"128": 0.1}}, 0.5)
    assert path.parent == tmp_path / "cache" / "gdcode"
    assert path.name.startswith("kernel-tuning-") and path.suffix == ".json"
    entry = tuning.read(key)
    assert entry["params"] == {"csr_ahead": 128} and entry["key"] == key
    assert entry["seconds"] == 0.5 and entry["format"] == tuning.FORMAT
    assert tuning.read(_key("other")) is None  # another build: another file
    assert tuning.cache_path(_key("other")) != path
    assert not list(path.parent.glob("*.tmp"))


def test_cache_ignores_broken_or_foreign_entries():
    key = _key()
    path = tuning.cache_path(key)
    path.parent.mkdir(parents=True)
    for text in ("{not json", json.dumps([1, 2]), json.dumps({"format": 99, "key": key, "params": {}}),
                 json.dumps({"format": tuning.FORMAT, "key": _key("x"), "params": {}}),
                 json.dumps({"format": tuning.FORMAT, "key": key, "params": [1]})):
        path.write_text(text)
        assert tuning.read(key) is None


def test_machine_key_names_the_cpu_the_build_and_the_version(tmp_path):
    class Fake:
        __file__ = str(tmp_path / "fake.so")

    (tmp_path / "fake.so").write_bytes(b"one build")
    key = tuning.machine_key(Fake)
    assert set(key) == {"cpu", "cpus", "gdcode", "kernels"}
    assert key["cpu"]["model"] and key["cpus"] >= 1
    (tmp_path / "fake.so").write_bytes(b"another build")
    assert tuning.machine_key(Fake)["kernels"] != key["kernels"]
    assert tuning.file_digest(tmp_path / "missing.so") == "unknown"


def _writer(args):
    cache, rounds, value = args
    import os

    os.environ["XDG_CACHE_HOME"] = cache
    for k in range(rounds):
        tuning.write(_key(), {"csr_ahead": value + k}, {"pad": "x" * 20000})
    return True


def _reader(args):
    cache, rounds = args
    import os

    os.environ["XDG_CACHE_HOME"] = cache
    seen = 0
    for _ in range(rounds):
        entry = tuning.read(_key())
        if entry is not None:
            assert entry["measured"]["pad"] == "x" * 20000  # never half a file
            seen += 1
    return seen


def test_concurrent_writers_and_readers_see_whole_files(tmp_path):
    cache = str(tmp_path / "cache")
    tuning.write(_key(), {"csr_ahead": 1}, {"pad": "x" * 20000})
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(4) as pool:
        writers = pool.map_async(_writer, [(cache, 60, 1000 * i) for i in range(2)])
        readers = pool.map_async(_reader, [(cache, 300)] * 2)
        assert all(writers.get(timeout=120))
        assert all(n == 300 for n in readers.get(timeout=120))
    assert tuning.read(_key())["params"]["csr_ahead"] % 1000 == 59  # one writer's last
    assert not list((tmp_path / "cache" / "gdcode").glob("*.tmp"))


# ----------------------------------------------------------------------------- applying


@compiled_only
def test_apply_cached_uses_this_machines_entry():
    key = tuning.machine_key(linear)
    params = {"dense_ahead_f64": 8192, "dense_ahead_f32": 12288, "csr_ahead": 64,
              "softmax_fused_kib": 6144}
    tuning.write(key, params)
    assert tuning.apply_cached(linear) == "cache"
    assert linear.tuning() == {**linear.DEFAULT_TUNING, **params}
    assert "dense_ahead_f64=8192" in tuning.describe(linear)


@compiled_only
def test_apply_cached_falls_back_to_the_defaults():
    linear.set_tuning(dense_ahead_f64=1)
    assert tuning.apply_cached(linear) == "defaults"  # nothing cached
    assert linear.tuning() == linear.DEFAULT_TUNING
    tuning.write(tuning.machine_key(linear), {"dense_ahead_f64": -5})
    assert tuning.apply_cached(linear) == "defaults"  # a bad value: ignored, with the reason
    assert "ignored" in tuning.detail and linear.tuning() == linear.DEFAULT_TUNING


@compiled_only
def test_disabled_uses_the_defaults_and_never_calibrates(monkeypatch):
    tuning.write(tuning.machine_key(linear), {"dense_ahead_f64": 8192})
    monkeypatch.setenv(tuning.ENV_DISABLE, "1")
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    assert tuning.apply_cached(linear) == "disabled"
    assert linear.tuning() == linear.DEFAULT_TUNING
    assert calibrate.ensure(force=True) == "disabled"
    monkeypatch.setenv(tuning.ENV_DISABLE, "0")  # "0" does not disable
    assert tuning.apply_cached(linear) == "cache"


def test_without_the_compiled_kernels_nothing_applies():
    assert tuning.apply_cached(None) == "defaults"
    assert tuning.describe(None) == "none (numpy twins)"


# ----------------------------------------------------------------------------- calibration


@compiled_only
def test_calibrate_picks_candidates_and_measures_each():
    params, measured = calibrate.calibrate(linear, rounds=1, nbytes=1 << 20)
    assert params["dense_ahead_f64"] in calibrate.DENSE_CANDIDATES
    assert params["dense_ahead_f32"] in calibrate.DENSE_CANDIDATES
    assert params["csr_ahead"] in calibrate.CSR_CANDIDATES
    assert params["softmax_fused_kib"] == calibrate.softmax_fused_kib()
    assert linear.tuning() == {**linear.DEFAULT_TUNING, **params}
    for name, candidates in (("dense_ahead_f64", calibrate.DENSE_CANDIDATES),
                             ("csr_ahead", calibrate.CSR_CANDIDATES)):
        assert sorted(int(c) for c in measured[name]) == sorted(candidates)
        assert all(t > 0 for t in measured[name].values())
        assert params[name] == calibrate.choose({int(c): t for c, t in measured[name].items()})


def test_softmax_fused_kib_is_a_quarter_of_the_cache(monkeypatch):
    assert calibrate.softmax_fused_kib(8 << 20) == 2048
    assert calibrate.softmax_fused_kib(32 << 20) == 8192
    assert calibrate.softmax_fused_kib(1 << 40, limit=65536) == 65536
    monkeypatch.setattr(calibrate, "last_level_cache_bytes", lambda: 12 << 20)
    assert calibrate.softmax_fused_kib() == 3072


def test_choose_prefers_a_plateau_to_the_edge_of_a_cliff():
    """6 KB is the fastest alone but next to the 4 KB cliff; 8 KB sits inside the plateau."""
    times = {0: 20.0, 2048: 15.0, 4096: 14.0, 6144: 8.9, 8192: 9.1, 12288: 9.0, 16384: 9.5}
    assert calibrate.choose(times) == 8192
    assert calibrate.choose({0: 3.0, 1024: 1.0, 2048: 2.0}) == 1024  # a single best point
    assert calibrate.choose({0: 3.0, 1024: 1.01, 2048: 1.0}) == 2048  # the plateau's end
    assert calibrate.choose({64: 1.0}) == 64
    assert calibrate.choose({0: 1.0, 64: 1.0, 128: 1.0}) == 0  # ties: the smaller


@compiled_only
def test_ensure_calibrates_once_then_reads_the_cache(monkeypatch):
    assert calibrate.ensure() == "calibrated"
    path = tuning.cache_path(tuning.machine_key(linear))
    assert path.exists() and tuning.read(tuning.machine_key(linear)) is not None
    params = linear.tuning()
    linear.set_tuning(**linear.DEFAULT_TUNING)
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: pytest.fail("calibrated twice"))
    assert calibrate.ensure() == "cache"
    assert linear.tuning() == params


@compiled_only
def test_ensure_without_a_writable_cache_still_applies(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert calibrate.ensure() == "calibrated"
    assert "not cached" in tuning.detail


@compiled_only
def test_calibrate_module_main(capsys):
    assert calibrate.main(["--force"]) == 0
    assert "kernel tuning: dense_ahead_f64=" in capsys.readouterr().out
    assert calibrate.main(["--quiet"]) == 0
    assert capsys.readouterr().out == ""
