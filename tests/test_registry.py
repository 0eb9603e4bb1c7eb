"""The generic Registry, and the one idiom every kind of extension follows (no MPI)."""

from __future__ import annotations

import inspect
import sys

import pytest

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


def test_the_registry_module_needs_neither_numpy_nor_mpi():
    import subprocess

    code = "import sys, gdcode.registry; print(sorted({'numpy', 'mpi4py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

