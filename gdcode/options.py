"""The options of one training run: :class:`RunOptions`, read from TOML files and the command line.

Every option is one field of :class:`RunOptions`, declared once with its type, default, help
and the values it allows. Values resolve in the order defaults, then the TOML file, then the
command line (:func:`from_sources`). Converting a value checks what one value can be checked
for on its own (its type, a finite number, its range or choices); :func:`gdcode.problem.check`
checks what needs several options or the run's parts.

Errors are :class:`~gdcode.errors.OptionError`: they name the option as a TOML key
(``lr = inf: must be a finite number``); the command line shows the flag instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gdcode.errors import ConfigError, OptionError

#: the largest seed (numpy's seed sequences take any non-negative integer; JSON and C take this)
MAX_SEED = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Check:
    """A test one option's value must pass, and how to say it when it fails."""

    test: Callable[[Any], bool]
    requirement: str


POSITIVE = Check(lambda v: v > 0, "must be > 0")
AT_LEAST_1 = Check(lambda v: v >= 1, "must be at least 1")
NON_NEGATIVE = Check(lambda v: v >= 0, "must be >= 0")
UNIT_OPEN = Check(lambda v: 0 <= v < 1, "must be in [0, 1)")
UNIT_CLOSED = Check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
SEED = Check(lambda v: 0 <= v <= MAX_SEED, f"must be an integer from 0 to 2**63-1 ({MAX_SEED})")


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, check: Check | None = None,
           modes: tuple[str, ...] | None = None, flag: bool = False, resumable: bool = False) -> Any:
    """Declare one field of :class:`RunOptions`.

    Parameters
    ----------
    default
        The value when neither the TOML file nor the command line gives one.
    help : str
        One line for ``gdcode run --help`` and the README's table.
    choices : tuple of str, optional
        The allowed values of a string option.
    check : Check, optional
        A test of a given value (``None`` always passes).
    modes : tuple of str, optional
        The modes that take the option; another mode refuses a value other than the
        default. ``None``: every mode (or ignored where it does not apply).
    flag : bool
        A switch: ``--name`` sets it, ``--no-name`` clears it.
    resumable : bool
        ``--resume`` may change it (every other option comes from the resumed run).
    """
    meta = {"help": help, "choices": choices, "check": check, "modes": modes, "flag": flag,
            "resumable": resumable}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Every option of one run, resolved (attribute names are the option names with underscores).

    Build one with :func:`from_sources` (defaults, TOML, command line), :meth:`from_dict`
    (a stored run) or directly with keywords, which are converted and checked the same way.
    """

    mode: str = option("coded", "training mode (see gdcode.modes)")
    scheme: str = option("uncoded", "gradient code (coded mode); see `gdcode codes --list`, or MODULE:CLASS")
    workers: int = option(4, "number of worker ranks W (the job has W+1 ranks)", check=AT_LEAST_1)
    stragglers: int = option(0, "stragglers S the code tolerates (0 <= S < W)", check=NON_NEGATIVE)
    collect: int | None = option(None, "replies an approximate code waits for (default W-S)", check=AT_LEAST_1)
    code_options: str | None = option(None, "more code options: KEY=VALUE[,...], e.g. degree=3,rescale=true")
    wait: str = option("fixed", "coded, ignore and approximate codes: fixed (the code's rule), quantile:Q or mad:K "
                                "(a deadline each iteration from the recent arrival times)", modes=("coded",))
    min_replies: int = option(1, "coded with --wait quantile or mad: replies to wait for at least",
                              check=AT_LEAST_1, modes=("coded",))
    dataset: str = option("synthetic:4000x100",
                          "synthetic:ROWSxCOLS, sklearn:NAME or a prepared dataset directory")
    test_fraction: float = option(0.2, "held-out fraction of a dataset that is not already split "
                                       "(0 keeps all rows)", check=UNIT_OPEN)
    model: str = option("logistic", "objective (see gdcode.models), or MODULE:CLASS")
    model_options: str | None = option(None, "the model's own options: KEY=VALUE[,...] (e.g. a plug-in's delta=1.5)")
    intercept: bool = option(False, "append a constant column to X", flag=True)
    hidden: str | None = option(None, "mlp: hidden layer widths, e.g. 1024,1024 (default: one layer of 100)",
                                check=Check(lambda v: re.fullmatch(r"\s*[1-9]\d*(\s*,\s*[1-9]\d*)*\s*", v)
                                            is not None, "must be layer widths >= 1 separated by commas, "
                                                         "e.g. 1024,1024"))
    activation: str = option("relu", "mlp: activation of the hidden layers", choices=("relu", "tanh"))
    l2: float | None = option(None, "L2 coefficient lambda (default 1/n)", check=NON_NEGATIVE)
    update: str = option("gd", "update rule (see gdcode.optim), or MODULE:CLASS")
    update_options: str | None = option(None, "the update rule's own options: KEY=VALUE[,...] (run options it "
                                              "names, such as momentum, are passed as well)")
    lr: float = option(0.5, "step size eta", check=POSITIVE)
    lr_schedule: str = option("constant", "step sizes: constant, inv-sqrt (lr/sqrt(t)) or step",
                              choices=("constant", "inv-sqrt", "step"))
    lr_step_every: int = option(100, "step schedule: iterations between decays", check=AT_LEAST_1)
    lr_decay: float = option(0.5, "step schedule: factor applied every --lr-step-every iterations",
                             check=Check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    momentum: float = option(0.9, "coefficient beta of the update rules that take one (--update momentum)",
                             check=UNIT_OPEN)
    target_loss: float | None = option(None, "stop once the training loss reaches this value", resumable=True)
    iterations: int = option(100, "iterations (asynchronous modes: steps per worker)", check=AT_LEAST_1,
                             resumable=True)
    delay: str = option("none", "straggler delay: none, exp:MEAN, ... (see gdcode.delays), or "
                                "MODULE:CLASS[:ARGS]")
    delay_scale_with_load: bool = option(False, "multiply each pause by the worker's load", flag=True)
    seed: int = option(0, "seed of data, initial point, codes and delays", check=SEED)
    init: str | None = option(None, "initial point: zeros, normal:STD (seeded), or FILE.npy (default: the model's "
                                    "own, 0.01 N(0, 1) for the linear models)")
    out: str = option("results", "parent directory of the run directory")
    name: str | None = option(None, "run directory name, one path component (default: scheme, workers and "
                                    "time)")
    timeout: float | None = option(None, "abort the run after this many seconds (summary status timeout)",
                                   check=POSITIVE, resumable=True)
    checkpoint_every: int = option(0, "save a checkpoint every K iterations (0: never)", check=NON_NEGATIVE,
                                   modes=("coded",), resumable=True)
    resume: str | None = option(None, "continue the run in this run directory from its last checkpoint",
                                modes=("coded",), resumable=True)
    record_delays: str | None = option(None, "write the workers' measured compute seconds to this CSV "
                                             "(a trace:FILE)", modes=("coded",))
    track_gradient_error: bool = option(False, "record ||g_hat - g|| / ||g|| per iteration (off the clock)",
                                        flag=True, modes=("coded",))
    quiet: bool = option(False, "no progress line (it is drawn on rank 0 only when stderr is a terminal)",
                         flag=True, resumable=True)
    tolerate_failures: bool = option(False, "a worker that dies (killed, or an error) becomes a permanent "
                                            "straggler instead of ending the job (coded, hogwild; MPICH's "
                                            "hydra launcher, workers on rank 0's host)", flag=True,
                                     modes=("coded", "hogwild"))
    cluster: str | None = option(None, "run on the emulated cluster NAME (`gdcode cluster up NAME`): the "
                                       "coordinator on its host 0, the workers on the others, over its links")
    # the asynchronous modes and the allreduce/local baselines
    batch_size: int = option(0, "rows of a minibatch: coded, per iteration over all partitions (the same fraction "
                                "of each); hogwild, gossip, allreduce, local, per worker step (0: every row)",
                             check=NON_NEGATIVE)
    threads: int = option(1, "hogwild: threads per worker running the lock-free Hogwild kernel",
                          check=AT_LEAST_1)
    pull_every: int = option(1, "hogwild: a worker's steps between pulls of the server's newest model",
                             check=AT_LEAST_1)
    max_staleness: int | None = option(None, "hogwild: drop updates computed on a model more than K versions "
                                             "old (default: apply all)", check=NON_NEGATIVE)
    mixing: str = option("pairwise", "gossip: mixing rule", choices=("pairwise", "elastic", "push-sum"))
    gossip_prob: float = option(0.5, "gossip: probability that a worker gossips before a step",
                                check=UNIT_CLOSED)
    gossip_period: int = option(0, "gossip: gossip every K steps instead (0: use --gossip-prob)",
                                check=NON_NEGATIVE)
    interpolation: str = option("clock", "gossip pairwise: weight f of the peer's model: clock "
                                         "(c_peer/(c+c_peer)), constant (--alpha) or loss (loss/(loss+loss_peer))",
                                choices=("constant", "clock", "loss"))
    alpha: float = option(0.5, "gossip: pairwise constant weight f, elastic coefficient alpha",
                          check=Check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    peer_selection: str = option("uniform", "gossip pairwise: uniform, or flow (peers that time out are "
                                            "picked less)", choices=("uniform", "flow"))
    peer_timeout: float = option(0.1, "gossip pairwise: seconds a worker waits after its step for a peer's "
                                      "answer", check=POSITIVE)
    eval_every: float = option(0.2, "hogwild, gossip: seconds between evaluations of the current or averaged "
                                    "model (rank 0, off the workers' path)", check=POSITIVE)
    average_every: int = option(10, "local: steps between model averages (0: averaged only at the end)",
                                check=NON_NEGATIVE)

    def __post_init__(self) -> None:
        for spec in OPTIONS:
            value = convert(spec, getattr(self, spec.dest), "given")
            object.__setattr__(self, spec.dest, value)

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` applied (converted and checked like any value)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name (underscores): what ``options.json`` and ``metadata.json`` hold."""
        return {spec.dest: getattr(self, spec.dest) for spec in OPTIONS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "given") -> RunOptions:
        """Options from a mapping of option names (dashes or underscores) to values.

        Raises
        ------
        OptionError
            For an unknown name or a bad value.
        """
        out = {}
        for key, value in values.items():
            dest = key.replace("-", "_")
            if dest not in OPTION_BY_DEST:
                raise OptionError(dest, value, f"is not an option ({origin}); known: "
                                                f"{', '.join(o.name for o in OPTIONS)}")
            out[dest] = convert(OPTION_BY_DEST[dest], value, origin)
        return cls(**out)

    def label(self) -> str:
        """What the run trains: the scheme in coded mode, else the mode."""
        return self.scheme if self.mode == "coded" else self.mode


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One field of :class:`RunOptions` as the command line and TOML files see it."""

    dest: str
    kind: type  # int, float, str or bool
    optional: bool  # None is allowed
    default: Any
    help: str
    choices: tuple[str, ...] | None
    check: Check | None
    modes: tuple[str, ...] | None
    flag: bool
    resumable: bool

    @property
    def name(self) -> str:
        """The option as a flag is spelled, without the dashes: ``lr-schedule``."""
        return self.dest.replace("_", "-")


def _specs() -> tuple[OptionSpec, ...]:
    hints = typing.get_type_hints(RunOptions)
    out = []
    for f in dataclasses.fields(RunOptions):
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        kind = next(a for a in args if a is not type(None)) if args else hints[f.name]
        m = f.metadata
        out.append(OptionSpec(f.name, kind, optional, f.default, m["help"], m["choices"], m["check"],
                              m["modes"], m["flag"], m["resumable"]))
    return tuple(out)


#: every option, in declaration order
OPTIONS: tuple[OptionSpec, ...] = _specs()
OPTION_BY_DEST: dict[str, OptionSpec] = {spec.dest: spec for spec in OPTIONS}


def convert(spec: OptionSpec, value: Any, origin: str = "given") -> Any:
    """``value`` as the option's type, checked on its own.

    Strings (the command line) are parsed; a TOML value must already have the right type (a
    boolean is not an integer, and a float with a fraction is not one either). Numbers must
    be finite.

    Raises
    ------
    OptionError
        Naming the option, the value and what is allowed.
    """
    if value is None:
        if spec.optional:
            return None
        raise OptionError(spec.dest, value, f"must be given ({origin})")
    kind = spec.kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if isinstance(value, str) and text in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and text in ("0", "false", "no", "off"):
            return False
        raise OptionError(spec.dest, value, f"must be true or false ({origin})")
    if kind in (int, float):
        converted = _number(kind, value)
        if converted is None:
            what = "an integer" if kind is int else "a finite number"
            raise OptionError(spec.dest, value, f"must be {what} ({origin})")
        value = converted
    elif kind is str:
        if not isinstance(value, str):
            raise OptionError(spec.dest, value, f"must be a string ({origin})")
    if spec.choices is not None and value not in spec.choices:
        raise OptionError(spec.dest, value, f"must be one of: {', '.join(spec.choices)}")
    if spec.check is not None and not spec.check.test(value):
        raise OptionError(spec.dest, value, spec.check.requirement)
    return value


def _number(kind: type, value: Any) -> int | float | None:
    """``value`` as a finite int or float, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if kind is int:
            return int(value) if value.is_integer() else None
        return value
    if isinstance(value, int):
        return int(value) if kind is int else float(value)
    return None


# ----------------------------------------------------------------------------- sources


def add_arguments(parser: argparse.ArgumentParser, dests: tuple[str, ...] | None = None) -> None:
    """Add the options (all, or those named in ``dests``) to ``parser``, each "not given" by default.

    Values stay strings here; :func:`from_sources` converts them. A flag gets ``--name``
    and ``--no-name``.
    """
    for spec in OPTIONS:
        if dests is not None and spec.dest not in dests:
            continue
        if spec.flag:
            parser.add_argument(f"--{spec.name}", dest=spec.dest, action="store_const", const=True,
                                default=None, help=spec.help)
            parser.add_argument(f"--no-{spec.name}", dest=spec.dest, action="store_const", const=False,
                                default=None, help=argparse.SUPPRESS)
        else:
            extra = f" {{{','.join(spec.choices)}}}" if spec.choices else ""
            parser.add_argument(f"--{spec.name}", dest=spec.dest, type=str, default=None,
                                metavar=spec.dest.upper(), help=f"{spec.help}{extra} (default: {spec.default})")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on a command line parsed by a parser :func:`add_arguments` set up."""
    return {spec.dest: getattr(args, spec.dest) for spec in OPTIONS
            if getattr(args, spec.dest, None) is not None}


def read_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Parse a TOML file.

    Raises
    ------
    ConfigError
        Naming ``what`` and the file when it is missing, unreadable or not valid TOML.
    """
    if sys.version_info >= (3, 11):  # imported here: a rank reads no TOML
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The run options of a TOML config: option names as keys (dashes or underscores), flat or
    under ``[run]``; other tables (an experiment's sweeps) are skipped.

    Raises
    ------
    OptionError
        For an unknown option or a value of the wrong type.
    """
    data = read_toml(path, "config file")
    data = data.get("run", data)
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            continue
        dest = key.replace("-", "_")
        if dest not in OPTION_BY_DEST:
            raise OptionError(dest, value, f"is not an option (config file {path}); known: "
                                            f"{', '.join(o.name for o in OPTIONS)}")
        out[dest] = convert(OPTION_BY_DEST[dest], value, f"config file {path}")
    return out


def from_sources(toml: Mapping[str, Any] | None = None, cli: Mapping[str, Any] | None = None) -> RunOptions:
    """Defaults, then ``toml`` (from :func:`load_toml`), then ``cli`` (from :func:`given`)."""
    values = dict(toml or {})
    for dest, value in (cli or {}).items():
        values[dest] = convert(OPTION_BY_DEST[dest], value, "command line")
    return RunOptions(**values)


def code_options(options: RunOptions) -> dict[str, Any]:
    """The keyword options of the run's code: ``--code-options`` and ``--collect``.

    Raises
    ------
    OptionError
        When ``code_options`` is not ``KEY=VALUE[,...]``.
    """
    out = key_values(options, "code_options")
    if options.collect is not None:
        out["collect"] = options.collect
    return out


def key_values(options: RunOptions, name: str) -> dict[str, Any]:
    """The ``KEY=VALUE[,...]`` option ``name`` as a dict; values become int, float or bool where they
    read as one (keys with dashes get underscores).

    Raises
    ------
    OptionError
        When the text is not ``KEY=VALUE[,...]``.
    """
    out: dict[str, Any] = {}
    text = getattr(options, name)
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(name, text, "write KEY=VALUE[,KEY=VALUE...]")
        value: Any = raw.strip()
        if value.lower() in ("true", "false"):
            value = value.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(value)
                    break
                except ValueError:
                    pass
        out[key.strip().replace("-", "_")] = value
    return out
