"""Training modes: what each one is, the options it checks, and the runtime module that runs it.

A mode is a class registered in :data:`MODES`. Its checks need no MPI and run before any job
starts (:func:`gdcode.problem.check`); its ``runtime`` names the module of
:mod:`gdcode.runtime` whose ``coordinate(ctx)`` runs on rank 0 and ``work(ctx)`` on the
workers, imported only inside the job (:func:`gdcode.runtime.session.run`).
"""

from __future__ import annotations

from typing import Any

from gdcode.errors import OptionError
from gdcode.options import OPTIONS, RunOptions
from gdcode.registry import Registry


class Mode:
    """Base class of a training mode.

    Attributes
    ----------
    name : str
        ``--mode`` (set by registration).
    runtime : str
        The module with ``coordinate(ctx)`` (rank 0) and ``work(ctx)`` (ranks 1..W).
    coded : bool
        Whether the mode trains through a gradient code (``--scheme``); the others give
        worker ``i`` partition ``i`` of W.
    doorbell : bool
        Whether its ranks may sleep until a sender wakes them (:mod:`gdcode.runtime.doorbell`).
        Not for a mode with collectives in its loop: a collective moves on only while every rank
        in it calls MPI, and its steps ring no one (measured: an allreduce run took 1.9 s with
        doorbells against 1.0 s polling, docs/runtime.md).
    """

    name = ""
    runtime = ""
    coded = False
    doorbell = True

    def check(self, options: RunOptions, model: Any) -> None:
        """Refuse options this mode cannot run (:class:`~gdcode.errors.OptionError`).

        The default refuses a value other than the default for an option that only other
        modes take.
        """
        for spec in OPTIONS:
            value = getattr(options, spec.dest)
            if spec.modes is not None and self.name not in spec.modes and value not in (None, False, 0, spec.default):
                raise OptionError(spec.dest, value, f"is available in mode {', '.join(spec.modes)} only, "
                                                    f"not mode {self.name}")


MODES: Registry[type[Mode]] = Registry("mode", "gdcode.modes")


@MODES.register("coded")
class Coded(Mode):
    """The synchronous gradient-coding family: uncoded, ignore, exact and approximate codes."""

    runtime = "gdcode.runtime.coded"
    coded = True


@MODES.register("hogwild")
class Hogwild(Mode):
    """An asynchronous parameter server: workers push SGD updates, rank 0 applies them as they come."""

    runtime = "gdcode.runtime.hogwild"

    def check(self, options: RunOptions, model: Any) -> None:
        super().check(options, model)
        if options.update != "gd":
            raise OptionError("update", options.update, "mode hogwild applies plain SGD updates on the server; "
                                                        "use gd")
        if options.threads > 1:
            from gdcode import kernels

            if not (kernels.COMPILED and kernels.OPENMP and "hogwild_dense" in kernels.KERNEL_NAMES):
                raise OptionError("threads", options.threads, "needs the compiled Hogwild kernel built with "
                                                              "OpenMP, which this installation does not have; "
                                                              "use 1 or rebuild with `make install`")
            if not getattr(model, "supports_hogwild_threads", hasattr(model, "hogwild")):
                raise OptionError("threads", options.threads, f"model {options.model} has no lock-free "
                                                              "Hogwild kernel; use 1")


@MODES.register("gossip")
class Gossip(Mode):
    """Decentralised SGD with pairwise, elastic or push-sum averaging between workers."""

    runtime = "gdcode.runtime.gossip"

    def check(self, options: RunOptions, model: Any) -> None:
        super().check(options, model)
        if options.workers < 2:
            raise OptionError("workers", options.workers, "mode gossip needs at least 2 workers")


@MODES.register("allreduce")
class AllReduce(Mode):
    """Synchronous data-parallel SGD: the workers' gradients summed by an all-reduce each step."""

    runtime = "gdcode.runtime.allreduce"
    doorbell = False


@MODES.register("local")
class Local(Mode):
    """Local SGD: every worker steps on its own model, averaged every --average-every steps."""

    runtime = "gdcode.runtime.allreduce"
    doorbell = False


def get(name: str) -> Mode:
    """The mode ``name``.

    Raises
    ------
    OptionError
        For an unknown mode, listing the known ones.
    """
    try:
        return MODES.build(name)
    except ValueError as exc:
        raise OptionError("mode", name, str(exc)) from None
