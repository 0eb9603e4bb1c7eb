"""``gdcode prepare mnist --raw DIR``: the standard IDX files (plain or gzip) into a prepared directory."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from gdcode import cli, problem
from gdcode.data.prepare import mnist
from gdcode.data.prepared import PreparedSource
from gdcode.options import RunOptions

N_TRAIN, N_TEST, SIDE = 30, 7, 28


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (uint8) as an IDX file: magic 0x0000080D (D its dimensions), sizes, then the bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_raw(where: Path, gz: bool, seed: int = 0, **override: bytes) -> Path:
    """Small MNIST files of random pixels and labels in ``where`` (``override``: a file's bytes)."""
    rng = np.random.default_rng(seed)
    where.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, SIDE, SIDE)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, SIDE, SIDE)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST)}
    for name, array in arrays.items():
        data = override.get(name, idx_bytes(array.astype(np.uint8)))
        if gz:
            (where / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (where / name).write_bytes(data)
    return where


def raw_arrays(where: Path) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "test"):
        images, labels, _ = mnist.read_split(where, split)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_prepare_mnist_writes_pixels_over_255_and_the_standard_split(tmp_path, gz, capsys):
    raw = write_raw(tmp_path / "raw", gz)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", "mnist", "--raw", str(raw), "--out", str(out), "--seed", "4"]) == 0
    assert "30 training rows, 7 held out, 784 columns, dense" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["task"], meta["n_classes"], meta["cols"], meta["dtype"]) == ("multiclass", 10, 784, "float32")
    assert meta["classes"] == list(range(10)) and meta["source"]["dataset"] == "MNIST"
    assert set(meta["source"]["files"]) == {f"{n}{'.gz' if gz else ''}" for pair in mnist.FILES.values()
                                            for n in pair}
    src = PreparedSource(out)
    src.validate()
    arrays = raw_arrays(raw)
    perm = np.random.default_rng([4, 0x5B117]).permutation(N_TRAIN)
    X, y = src.train_rows(0, N_TRAIN)
    assert X.dtype == np.float32 and X.shape == (N_TRAIN, 784)
    images, labels = arrays["train"]
    np.testing.assert_array_equal(X, (images[perm].reshape(N_TRAIN, -1) / np.float32(255)).astype(np.float32))
    np.testing.assert_array_equal(y, labels[perm])
    assert X.min() >= 0 and X.max() <= 1
    Xt, yt = src.test_set()
    np.testing.assert_array_equal(Xt * 255, arrays["test"][0].reshape(N_TEST, -1).astype(np.float32))
    np.testing.assert_array_equal(yt, arrays["test"][1])


def test_fashion_float64_and_a_run_of_the_mlp_on_it(tmp_path):
    raw = write_raw(tmp_path / "raw", gz=True)
    assert cli.main(["prepare", "mnist", "--raw", str(raw), "--fashion", "--dtype", "float64",
                     "--out", str(tmp_path / "f")]) == 0
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["classes"] == mnist.FASHION_CLASSES and meta["dtype"] == "float64"
    assert meta["source"]["dataset"] == "Fashion-MNIST"
    assert mnist.__doc__ and "pixel / 255" in mnist.__doc__
    # float32 rows reach the MLP's float32 kernel through a run's problem
    assert cli.main(["prepare", "mnist", "--raw", str(raw), "--out", str(tmp_path / "m")]) == 0
    p = problem.build(RunOptions(dataset=str(tmp_path / "m"), model="mlp", hidden="8"))
    X, y = p.train_set()
    assert X.dtype == np.float32 and p.n_params == 785 * 8 + 9 * 10
    assert np.isfinite(p.model.objective(X, y, p.w0, p.l2))


def test_bad_raw_files_are_one_line_errors_with_exit_2(tmp_path, capsys):
    rng = np.random.default_rng(1)
    cases = {
        "magic": ({"train-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (N_TRAIN, SIDE, SIDE)), 0x0801)},
                  "is not an IDX file of 3-D unsigned bytes: its magic number is 0x00000801, expected 0x00000803"),
        "count": ({"t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, N_TEST + 1))},
                  f"holds {N_TEST} images but", ),
        "truncated": ({"train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, N_TRAIN))[:-3]},
                      "the file is truncated"),
        "label": ({"train-labels-idx1-ubyte": idx_bytes(np.full(N_TRAIN, 12))}, "label 12 of item 1"),
    }
    for name, (override, message) in cases.items():
        for gz in (False, True):
            raw = write_raw(tmp_path / f"raw-{name}-{gz}", gz, **override)
            out = tmp_path / f"out-{name}-{gz}"
            assert cli.main(["prepare", "mnist", "--raw", str(raw), "--out", str(out)]) == 2, name
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, (name, err)
            assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    raw = write_raw(tmp_path / "raw-missing", False)
    (raw / "t10k-images-idx3-ubyte").unlink()
    assert cli.main(["prepare", "mnist", "--raw", str(raw)]) == 2
    assert "has no t10k-images-idx3-ubyte (nor t10k-images-idx3-ubyte.gz)" in capsys.readouterr().err
    assert cli.main(["prepare", "mnist", "--raw", str(raw / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli.main(["prepare", "mnist", "--raw", str(raw), "--test-fraction", "0.1"]) == 2
    assert "--test-fraction does not apply to `gdcode prepare mnist`" in capsys.readouterr().err
    assert cli.main(["prepare", "mnist"]) == 2
    assert "mnist needs --raw DIR" in capsys.readouterr().err


def test_dotted_names_are_found(tmp_path):
    raw = write_raw(tmp_path / "raw", gz=False)
    for p in raw.iterdir():
        p.rename(raw / p.name.replace("-idx", ".idx"))
    images, labels, files = mnist.read_split(raw, "train")
    assert images.shape == (N_TRAIN, SIDE, SIDE) and files["images"].name == "train-images.idx3-ubyte"
