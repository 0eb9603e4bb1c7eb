"""The generic Registry, and the one idiom every kind of extension follows (no MPI)."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest

from gdcode import codes, delays, models, optim
from gdcode.errors import ConfigError
from gdcode.registry import Registry


def shapes() -> Registry:
    reg: Registry = Registry("shape", "gdcode_tests.shapes", fixed=("size",))

    @reg.register("square")
    class Square:
        """A square of side ``size``.

        More text.
        """

        def __init__(self, size, filled=False, colour="red"):
            self.size, self.filled, self.colour = size, filled, colour

    def circle(size, **style):
        return ("circle", size, style)

    reg.register("circle", circle)
    return reg


def test_register_names_and_get():
    reg = shapes()
    assert reg.names() == ["circle", "square"]
    square = reg.get("square")
    assert square.name == "square" and square.__name__ == "Square"
    assert reg.describe("square") == "A square of side ``size``."
    assert reg.describe("circle") == ""
    with pytest.raises(ValueError, match="already registered"):
        reg.register("square", object)
    for bad in ("", "a:b"):
        with pytest.raises(ValueError):
            reg.register(bad)


def test_unknown_name_lists_the_known_ones_and_the_plugin_form():
    with pytest.raises(ValueError) as info:
        shapes().get("hexagon")
    assert str(info.value) == ("unknown shape 'hexagon'; known shapes: circle, square; "
                               "a plug-in is given as MODULE:CLASS")


def test_options_leave_out_the_fixed_parameters_in_declaration_order():
    reg = shapes()
    opts = reg.options("square")
    assert list(opts) == ["filled", "colour"]
    assert all(isinstance(p, inspect.Parameter) for p in opts.values())
    assert opts["colour"].default == "red"
    assert reg.options("circle") == {}


def test_build_refuses_unknown_options_unless_the_factory_takes_any():
    reg = shapes()
    sq = reg.build("square", 3, colour="blue")
    assert (sq.size, sq.colour) == (3, "blue")
    with pytest.raises(ValueError) as info:
        reg.build("square", 3, colour="blue", sides=4, angle=1)
    assert "angle, sides" in str(info.value) and "colour, filled" in str(info.value)
    assert reg.build("circle", 2, fill=True) == ("circle", 2, {"fill": True})


def test_import_paths(monkeypatch, tmp_path):
    (tmp_path / "shape_plugin.py").write_text(
        '"""Plug-in shapes."""\n\n\nclass Star:\n    """A star."""\n\n    def __init__(self, size, points=5):\n'
        "        self.points = points\n\n\nclass Named:\n    name = 'own'\n\n\nclass Outer:\n    class Inner:\n"
        '        """Nested."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = shapes()
    star = reg.get("shape_plugin:Star")
    assert star.name == "shape_plugin:Star" and reg.build("shape_plugin:Star", 1, points=6).points == 6
    assert reg.get("shape_plugin:Named").name == "own"  # a class's own name is kept
    assert reg.describe("shape_plugin:Outer.Inner") == "Nested."
    assert reg.is_plugin("shape_plugin:Star") and not reg.is_plugin("square")
    assert ("shape_plugin:Star", "import path") in reg.plugins()
    assert "shape_plugin:Star" not in reg.names()
    for bad, part in [("no_such_module_xyz:Star", "cannot import module 'no_such_module_xyz'"),
                      ("shape_plugin:Nope", "has no attribute 'Nope'"), ("shape_plugin:", "not an import path"),
                      (":Star", "not an import path"), ("shape_plugin:Star:x", "not an import path")]:
        with pytest.raises(ValueError) as info:
            reg.get(bad)
        assert repr(bad) in str(info.value) and part in str(info.value) and "MODULE:CLASS" in str(info.value)


def test_entry_points_are_read_lazily_and_a_failing_one_is_named(monkeypatch, tmp_path):
    info = tmp_path / "shape_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shape-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[gdcode_tests.shapes]\ntriangle = shape_eps:Triangle\n"
                                           "broken = shape_eps_missing:X\nsquare = shape_eps:Triangle\n")
    site = tmp_path
    (tmp_path / "shape_eps.py").write_text('class Triangle:\n    """Three sides."""\n\n    def __init__(self, size):\n'
                                           "        self.size = size\n")
    reg = shapes()
    assert reg.names() == ["circle", "square"]  # read once, before the dist-info is on the path
    monkeypatch.syspath_prepend(str(site))
    assert reg.names() == ["circle", "square"]
    reg.clear_plugin_cache()
    assert reg.names() == ["broken", "circle", "square", "triangle"]  # a built-in shadows a plug-in's name
    assert reg.plugins() == [("broken", "entry point shape-dist"), ("triangle", "entry point shape-dist")]
    assert reg.get("triangle").name == "triangle" and reg.build("triangle", 2).size == 2
    assert reg.get("square").__name__ == "Square"
    with pytest.raises(ValueError) as info:
        reg.get("broken")
    text = str(info.value)
    assert "'broken'" in text and "shape-dist" in text and "ModuleNotFoundError" in text and "shape_eps_missing" in text


def test_a_built_in_is_found_without_reading_the_entry_points(monkeypatch, tmp_path):
    """Reading the entry points scans every installed distribution: every rank of a run looks up
    its delay model, code and mode, and a built-in must not pay for that scan."""
    import importlib.metadata

    def refuse(**kwargs):
        raise AssertionError("the entry points were read")

    monkeypatch.setattr(importlib.metadata, "entry_points", refuse)
    reg = shapes()
    assert reg.knows("square") and reg.get("square").__name__ == "Square"
    delays.DELAYS.clear_plugin_cache()
    try:
        assert delays.parse("exp:0.5").spec == "exp:0.5"
        with pytest.raises(AssertionError, match="entry points were read"):
            reg.knows("triangle")  # not a built-in: only then are they read
    finally:
        delays.DELAYS.clear_plugin_cache()


def test_a_class_without_a_constructor_of_its_own_takes_no_options():
    reg: Registry = Registry("thing", "gdcode_tests.things")

    @reg.register("plain")
    class Plain:
        """Nothing to set."""

    assert reg.options("plain") == {} and inspect.signature(Plain).parameters == {}
    assert isinstance(reg.build("plain"), Plain)
    with pytest.raises(ValueError, match="takes no option colour"):
        reg.build("plain", colour="red")


def test_the_registry_module_needs_neither_numpy_nor_mpi():
    import subprocess

    code = "import sys, gdcode.registry; print(sorted({'numpy', 'mpi4py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- the four registries


def test_each_kind_has_one_registry_with_its_builtins():
    assert set(codes.CODES.names()) >= {"uncoded", "ignore", "frc", "cyclic", "cyclic-mds", "approx", "sgc",
                                        "expander", "bcc", "partial-frc", "partial-cyclic"}
    assert set(models.MODELS.names()) >= {"logistic", "least-squares", "hinge", "softmax"}
    assert set(optim.UPDATES.names()) >= {"gd", "agd", "momentum", "adam"}
    assert set(delays.DELAYS.names()) >= {"none", "exp", "shifted-exp", "pareto", "persistent", "trace"}
    assert codes.names() == codes.CODES.names() and models.names() == models.MODELS.names()
    assert optim.names() == optim.UPDATES.names() and delays.names() == delays.DELAYS.names()
    for name in codes.names():
        assert codes.get_class(name).name == name
    assert list(codes.CODES.options("expander")) == ["degree", "collect", "decoder"]
    assert list(optim.UPDATES.options("momentum")) == ["momentum"]
    assert list(delays.DELAYS.options("persistent")) == ["k", "factor", "base"]
    assert models.MODELS.options("logistic") == {}


@pytest.mark.parametrize("call", [
    lambda: codes.build("nope", 4),
    lambda: codes.build("cyclic", 4, 1, collect=2),
    lambda: codes.build("frc", 5, 1),
    lambda: models.get("svm"),
    lambda: models.get("logistic", n_threads=0),
    lambda: models.get("softmax").n_params(3, 1),
    lambda: optim.make("sgd", np.zeros(2), optim.Schedule(1.0)),
    lambda: optim.make("momentum", np.zeros(2), optim.Schedule(1.0), momentum=1.5),
    lambda: optim.make("momentum", np.zeros(2), optim.Schedule(1.0), beta=0.5),
    lambda: optim.make("adam", np.zeros(2), optim.Schedule(1.0), eps=float("nan")),
    lambda: optim.Schedule(-1.0),
    lambda: optim.Schedule(float("inf")),
    lambda: optim.Schedule(1.0, "cosine"),
    lambda: optim.Schedule(1.0, "step", decay=2.0),
    lambda: delays.parse("gamma:1"),
    lambda: delays.parse("exp:-1"),
    lambda: delays.parse("exp:nan"),
    lambda: delays.parse("persistent:4,2", n_workers=3),
    lambda: delays.parse("trace:no/such/file.csv"),
    lambda: codes.build("ignore", 4, 1).bind_partition_sizes([1, 2, 0, 1]),
], ids=lambda f: "call")
def test_library_errors_are_value_errors_in_library_terms(call):
    with pytest.raises(ValueError) as info:
        call()
    assert not isinstance(info.value, ConfigError)
    assert "--" not in str(info.value), str(info.value)


def test_the_library_error_names_the_parameter_and_the_allowed_values():
    with pytest.raises(ValueError) as info:
        optim.Schedule(-1)
    assert str(info.value) == "lr must be > 0, got -1"
    with pytest.raises(ValueError) as info:
        delays.parse("exp:-1")
    assert str(info.value) == "exp delay: MEAN must be > 0 seconds, got -1"
    with pytest.raises(ValueError) as info:
        models.get("x")
    assert str(info.value).startswith("unknown model 'x'; known models: hinge, least-squares, logistic, mlp, softmax")
