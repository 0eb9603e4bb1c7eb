"""Row ranges of ``.npy`` files, read and written without holding the whole array.

:class:`NpyRows` reads rows ``start:stop`` of a C-ordered ``.npy`` file straight into a new
array with ``readinto`` (no memory map, so no file pages are charged to the reader's
resident memory), and counts the bytes it reads; :meth:`NpyRows.chunks` streams the whole
array through one buffer of a bounded size. :class:`NpyAppender` writes a ``.npy`` file of a
known shape block by block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class NpyFormatError(ValueError):
    """A ``.npy`` file that is missing, truncated or not what its reader expects."""


class NpyRows:
    """Random access to the rows of one ``.npy`` file.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file (C order; any shape whose first axis is "rows").

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    bytes_read : int
        Data bytes read so far by :meth:`read` (the header is not counted).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                self.offset = fh.tell()
        except OSError as exc:
            raise NpyFormatError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise NpyFormatError(f"{self.path} is not a .npy file ({exc})") from None
        if fortran and len(shape) > 1:
            raise NpyFormatError(f"{self.path} is stored in Fortran order; rows must be contiguous")
        if dtype.hasobject:
            raise NpyFormatError(f"{self.path} holds Python objects; only numeric arrays are read")
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1
        self.row_bytes = self.row_items * self.dtype.itemsize
        expected = self.offset + self.row_bytes * (self.shape[0] if self.shape else 1)
        size = self.path.stat().st_size
        if size != expected:
            raise NpyFormatError(f"{self.path} has {size} bytes but its header describes "
                                 f"{expected}; the file is truncated or damaged: prepare it again")
        self.bytes_read = 0

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new array (nothing else of the file is read)."""
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise IndexError(f"rows {start}:{stop} outside 0:{n} of {self.path}")
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        want = (stop - start) * self.row_bytes
        if want == 0:
            return out
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset + start * self.row_bytes)
            got = 0
            while got < want:  # a single read() returns at most about 2 GiB on Linux
                k = fh.readinto(view[got:])
                if not k:
                    raise NpyFormatError(f"{self.path} ended early while reading rows "
                                         f"{start}:{stop}")
                got += k
        self.bytes_read += want
        return out

    def read_all(self) -> np.ndarray:
        """The whole array."""
        return self.read(0, len(self))

    @property
    def size(self) -> int:
        """The number of items of the array (all axes)."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def chunks(self, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
        """Every item of the array in file order, flattened, in chunks of at most ``max_bytes``.

        One buffer is read into again and again (``readinto``, no memory map: the file's pages
        are not charged to this process), so memory stays at ``max_bytes`` whatever the size
        of the file. A chunk is overwritten by the next one: copy what must outlive it.

        Parameters
        ----------
        max_bytes : int
            Bytes of one chunk; a chunk holds at least one item whatever this is.

        Yields
        ------
        first : int
            Flat index (C order) of the chunk's first item.
        chunk : numpy.ndarray
            The next items, 1-D, of the file's dtype.

        Raises
        ------
        NpyFormatError
            When the file ends before its last item.
        """
        total, itemsize = self.size, self.dtype.itemsize
        if total == 0 or itemsize == 0:
            return
        per = max(1, int(max_bytes) // itemsize)
        buf = np.empty(min(per, total), dtype=self.dtype)
        raw = memoryview(buf.view(np.uint8))  # type: ignore[arg-type]
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset)
            first = 0
            while first < total:
                n = min(per, total - first)
                want, got = n * itemsize, 0
                while got < want:
                    k = fh.readinto(raw[got:want])
                    if not k:
                        raise NpyFormatError(f"{self.path} ended early, at item "
                                             f"{first + got // itemsize} of {total}")
                    got += k
                self.bytes_read += want
                yield first, buf[:n]
                first += n


class NpyAppender:
    """Write a ``.npy`` file of a known shape by appending row blocks.

    Use as a context manager; on a clean exit the number of rows written must equal
    ``shape[0]``.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._fh = self.path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        if len(repr(header)) > 65000:  # format 1.0 headers are limited to 65535 bytes
            np.lib.format.write_array_header_2_0(self._fh, header)
        else:
            np.lib.format.write_array_header_1_0(self._fh, header)

    def append(self, block: np.ndarray) -> None:
        """Append rows (shape ``(k, *shape[1:])``, converted to the file's dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block of shape {block.shape} does not fit {self.path} {self.shape}")
        if self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"too many rows for {self.path}: {self.rows + block.shape[0]} > "
                             f"{self.shape[0]}")
        self._fh.write(memoryview(block.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
        self.rows += block.shape[0]

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if exc_type is None and self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self.rows} rows of {self.shape[0]}")


def save(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as a C-ordered ``.npy`` file."""
    np.save(Path(path), np.ascontiguousarray(array), allow_pickle=False)
