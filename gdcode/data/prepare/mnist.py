"""``gdcode prepare mnist --raw DIR [--fashion]``: MNIST or Fashion-MNIST from their IDX files.

``DIR`` holds the four standard files, each plain or gzip-compressed (``.gz``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

(the dotted spelling ``train-images.idx3-ubyte`` is found as well). Fashion-MNIST ships under
the same names. The prepared directory keeps the standard split: the 60000 ``train-*`` rows for
training, stored in a seeded permutation (``--seed``) so that contiguous partitions are fair
samples, and the 10000 ``t10k-*`` rows held out in file order; ``--test-fraction`` does not
apply. Each image becomes one dense row of its pixels in row-major order (28 x 28 = 784
columns), scaled to ``pixel / 255`` in [0, 1] and stored as float32 (``--dtype float64`` for
float64); ``--standardize`` then centres and scales the columns by the training rows'
statistics as for any dense kind. Labels are the class numbers 0..9 (multiclass, 10 classes;
``meta.json`` ``classes`` lists the digits, or Fashion-MNIST's article names).

Errors (one line, exit code 2, nothing written): a missing file, a file that is not an IDX
file of unsigned bytes with the expected number of dimensions (its magic number), a file
shorter or longer than its header says, images and labels of a split whose counts differ,
images of the two splits of different sizes, a label above 9.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from gdcode.errors import ConfigError

#: the standard file names, per split: (images, labels)
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: Fashion-MNIST's classes, 0..9
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
N_CLASSES = 10
#: IDX type code of unsigned bytes
UBYTE = 0x08
#: the dtypes ``--dtype`` takes
DTYPES = ("float32", "float64")


def find(raw: Path, stem: str) -> Path:
    """The file ``stem`` in ``raw``: plain or ``.gz``, with ``-`` or ``.`` before ``idx``.

    Raises
    ------
    ConfigError
        When none of them exists.
    """
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (raw / name).is_file():
            return raw / name
    raise ConfigError(f"--raw {raw} has no {stem} (nor {stem}.gz); it must hold the four MNIST files "
                      f"{', '.join(n for pair in FILES.values() for n in pair)} (plain or .gz)")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, as a uint8 array.

    Raises
    ------
    ConfigError
        Naming the file when it cannot be read, its magic number is not that of ``ndim``
        unsigned-byte dimensions, or its length differs from what its header says.
    """
    try:
        with path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
            data = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    want = 0x0800 + ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != want or data[:3] != bytes([0, 0, UBYTE]):
        shown = "none (the file is shorter than 4 bytes)" if magic is None else f"0x{magic:08X}"
        raise ConfigError(f"{path} is not an IDX file of {ndim}-D unsigned bytes: its magic number is "
                          f"{shown}, expected 0x{want:08X} ({'images' if ndim == 3 else 'labels'})")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ConfigError(f"{path} ends inside its header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = head + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise ConfigError(f"{path} has {len(data)} bytes, but its header (shape "
                          f"{' x '.join(map(str, shape))}) says {expected}: the file is "
                          f"{'truncated' if len(data) < expected else 'longer than its data'}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)


def read_split(raw: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, Path]]:
    """Images ``(n, rows, cols)`` and labels ``(n,)`` (uint8) of ``split``, and the files read."""
    images_name, labels_name = FILES[split]
    files = {"images": find(raw, images_name), "labels": find(raw, labels_name)}
    images = read_idx(files["images"], 3)
    labels = read_idx(files["labels"], 1)
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"{files['images']} holds {images.shape[0]} images but {files['labels']} "
                          f"{labels.shape[0]} labels; they must have one label per image")
    if labels.size and int(labels.max()) >= N_CLASSES:
        row = int(np.argmax(labels >= N_CLASSES))
        raise ConfigError(f"{files['labels']}: label {int(labels[row])} of item {row + 1} is not a class "
                          f"0..{N_CLASSES - 1}")
    return images, labels, files


def pixels(images: np.ndarray, dtype: str) -> np.ndarray:
    """Images as rows of ``pixel / 255`` in ``dtype`` (correctly rounded)."""
    rows = images.reshape(images.shape[0], -1)
    return np.divide(rows, 255, dtype=np.dtype(dtype))


def prepare(raw: Path, *, out: Path, fashion: bool, dtype: str | None, seed: int, standardize: bool,
            force: bool) -> tuple[Path, dict[str, Any]]:
    """Read the four files of ``raw`` and write the prepared directory ``out``; its path and metadata.

    Raises
    ------
    ConfigError
        For a missing or bad file (see the module docstring).
    """
    from gdcode.data.prepare.common import file_digest
    from gdcode.data.prepare.common import standardize as scale
    from gdcode.data.prepared import write_prepared

    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of: {', '.join(DTYPES)}")
    if not raw.is_dir():
        raise ConfigError(f"--raw {raw} is not a directory; give the directory holding the four MNIST "
                          "IDX files")
    train_images, train_labels, train_files = read_split(raw, "train")
    test_images, test_labels, test_files = read_split(raw, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ConfigError(f"the training images are {' x '.join(map(str, train_images.shape[1:]))} pixels "
                          f"but the held-out ones {' x '.join(map(str, test_images.shape[1:]))}")
    if train_images.shape[0] == 0:
        raise ConfigError(f"{train_files['images']} holds no images")
    perm = np.random.default_rng([seed, 0x5B117]).permutation(train_images.shape[0])
    X_train, X_test = pixels(train_images[perm], dtype), pixels(test_images, dtype)
    how = None
    if standardize:
        X_train, X_test, how = scale(X_train, X_test)
        X_train, X_test = X_train.astype(dtype), X_test.astype(dtype)
    name = "Fashion-MNIST" if fashion else "MNIST"
    n_train, n_test = X_train.shape[0], X_test.shape[0]
    meta = {
        "task": "multiclass", "n_classes": N_CLASSES,
        "classes": FASHION_CLASSES if fashion else list(range(N_CLASSES)),
        "label_rule": f"{name} label k -> class k", "standardized": how,
        "pixel_scaling": "pixel / 255, in [0, 1]" + (", then standardised" if how else ""),
        "split": {"seed": seed, "test_fraction": n_test / (n_train + n_test),
                  "rule": "the standard split: the train-* files for training, stored in a seeded "
                          "permutation; the t10k-* files held out, in file order"},
        "source": {"kind": "mnist", "dataset": name, "raw": str(raw),
                   "files": {str(p.name): file_digest(p) for files in (train_files, test_files)
                             for p in files.values()}},
    }
    splits = {"train": (X_train, train_labels[perm].astype(np.float64)),
              "test": (X_test, test_labels.astype(np.float64))}
    return write_prepared(out, splits, meta, force=force, dtype=dtype), meta
