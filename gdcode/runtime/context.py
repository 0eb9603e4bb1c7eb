"""What every rank of a run sets up before training, whatever the mode.

Set-up (data generation or loading, the evaluation copy, metadata) is outside the timed
path; ``elapsed`` starts with the first iteration.
"""

from __future__ import annotations

import datetime
import platform
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gdcode
from gdcode import delays, kernels, models, optim
from gdcode.config import RunConfig
from gdcode.data import DataSource, open_dataset


@dataclass
class Context:
    """One rank's view of a run.

    Attributes
    ----------
    cfg : RunConfig
        The resolved options.
    comm : mpi4py.MPI.Comm
        The job's communicator: rank 0 coordinates, ranks 1..W work.
    source : DataSource
        The dataset; workers read only their rows from it.
    model : gdcode.models.Model
        The objective.
    l2 : float
        The resolved L2 coefficient (``--l2``, default 1/n).
    w0 : numpy.ndarray
        The seeded initial point, the same for every scheme and mode.
    delay : gdcode.delays.DelayModel
        The injected straggler pauses.
    run_dir : Path
        The run directory (written by rank 0 only).
    """

    cfg: RunConfig
    comm: Any
    source: DataSource
    model: models.Model
    l2: float
    w0: np.ndarray
    delay: delays.DelayModel
    run_dir: Path
    argv: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def worker(self) -> int:
        """0-based worker index of this rank (rank - 1)."""
        return self.rank - 1

    @property
    def n_params(self) -> int:
        return self.w0.size

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Training rows ``start:stop``, with the intercept column when ``--intercept``."""
        X, y = self.source.train_rows(start, stop)
        return self._features(X), y

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        X, y = self.source.test_set()
        return self._features(X), y

    def _features(self, X):
        import scipy.sparse as sp

        if sp.issparse(X):
            if self.cfg.intercept:
                X = sp.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)], format="csr")
            return X.tocsr()
        X = np.ascontiguousarray(X)
        if self.cfg.intercept:
            X = np.ascontiguousarray(np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)]))
        return X


def make_context(cfg: RunConfig, comm: Any, run_dir: Path, argv: list[str]) -> Context:
    """Build the context every rank computes identically from the options."""
    model = models.get(cfg.model)
    source = open_dataset(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction, task=model.task)
    if model.task != source.task and not (model.task == "regression" and source.task == "binary"):
        from gdcode.errors import ConfigError

        raise ConfigError(f"--model {cfg.model} needs a {model.task} dataset; {cfg.dataset} is {source.task}")
    n_cols = source.n_cols + (1 if cfg.intercept else 0)
    w0 = optim.initial_point(model.n_params(n_cols, source.n_classes), cfg.seed)
    l2 = 1.0 / source.n_train if cfg.l2 is None else cfg.l2
    delay = delays.parse(cfg.delay, seed=cfg.seed, scale_with_load=cfg.delay_scale_with_load,
                         n_workers=cfg.workers)
    return Context(cfg=cfg, comm=comm, source=source, model=model, l2=l2, w0=w0, delay=delay,
                   run_dir=run_dir, argv=argv)


def metadata(ctx: Context, extra: dict | None = None) -> dict:
    """``metadata.json``: options, command line, versions, MPI library, hosts, start time, seed."""
    import mpi4py
    from mpi4py import MPI

    hosts = ctx.comm.gather(socket.gethostname(), root=0)
    meta = {
        "gdcode_version": gdcode.__version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "mpi4py_version": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_version": "{}.{}".format(*MPI.Get_version()),
        "compiled_kernels": kernels.COMPILED,
        "command": ["gdcode", *ctx.argv],
        "executable": sys.executable,
        "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": ctx.cfg.seed,
        "options": ctx.cfg.as_dict(),
        "l2": ctx.l2,
        "n_params": ctx.n_params,
        "dataset": ctx.source.metadata(),
        "world_size": ctx.comm.Get_size(),
        "hosts": {str(rank): host for rank, host in enumerate(hosts or [])},
    }
    meta.update(extra or {})
    return meta


def gather_hosts_on_workers(ctx: Context) -> None:
    """Workers' half of the host gather in :func:`metadata`."""
    ctx.comm.gather(socket.gethostname(), root=0)
