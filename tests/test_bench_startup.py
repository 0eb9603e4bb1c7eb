"""``gdcode bench startup``'s count of the modules every process compiles again (its timings are a
benchmark's, not asserted)."""

from __future__ import annotations

import py_compile
import time

import gdcode
from gdcode.bench import startup


def test_modules_without_up_to_date_bytecode_are_counted(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "sub/b.py"):
        (pkg / name).write_text("X = 1\n")
    monkeypatch.setattr(gdcode, "__file__", str(pkg / "__init__.py"))
    assert startup.uncompiled_modules() == 3
    py_compile.compile(str(pkg / "__init__.py"))
    py_compile.compile(str(pkg / "sub" / "b.py"))
    assert startup.uncompiled_modules() == 1
    time.sleep(0.01)
    (pkg / "sub" / "b.py").write_text("X = 2\n")  # edited after it was compiled
    assert startup.uncompiled_modules() == 2
