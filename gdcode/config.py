"""Options of ``gdcode run``: one table, read by the command line and by TOML configs.

Every option is declared once in :data:`OPTIONS`. Values resolve in the order defaults,
then the TOML file, then the command line. :func:`resolve` checks everything that can be
checked without MPI, so that bad input fails before any job starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gdcode.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("coded", "hogwild", "gossip", "allreduce", "local")


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``gdcode run`` option: its name (``--name``), type, default and help."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple | None = None
    flag: bool = False  # a switch: ``--name`` sets True

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


def _positive_int(text: str) -> int:
    return int(text)


OPTIONS: tuple[Option, ...] = (
    Option("mode", str, "coded", "training mode", choices=MODES),
    Option("scheme", str, "uncoded", "gradient code (coded mode); see `gdcode codes --list`"),
    Option("workers", int, 4, "number of worker ranks W (the job has W+1 ranks)"),
    Option("stragglers", int, 0, "stragglers S the code tolerates (0 <= S < W)"),
    Option("collect", int, None, "replies an approximate code waits for (default W-S)"),
    Option("code-options", str, None, "more code options: KEY=VALUE[,...], e.g. degree=3,rescale=true"),
    Option("dataset", str, "synthetic:4000x100", "synthetic:ROWSxCOLS, sklearn:NAME or a prepared dataset directory"),
    Option("test-fraction", float, 0.2, "held-out fraction of a dataset that is not already split (0 keeps all rows)"),
    Option("model", str, "logistic", "objective: logistic, least-squares, hinge, softmax, or a plug-in "
           "MODULE:CLASS (see gdcode.models)"),
    Option("intercept", bool, False, "append a constant column to X", flag=True),
    Option("l2", float, None, "L2 coefficient lambda (default 1/n)"),
    Option("update", str, "gd", "update rule: gd, agd, momentum, adam, or a plug-in MODULE:CLASS"),
    Option("lr", float, 0.5, "step size eta"),
    Option("lr-schedule", str, "constant", "step sizes: constant, inv-sqrt (lr/sqrt(t)) or step",
           choices=("constant", "inv-sqrt", "step")),
    Option("lr-step-every", int, 100, "step schedule: iterations between decays"),
    Option("lr-decay", float, 0.5, "step schedule: factor applied every --lr-step-every iterations"),
    Option("momentum", float, 0.9, "heavy-ball coefficient beta of --update momentum"),
    Option("target-loss", float, None, "stop once the training loss reaches this value"),
    Option("iterations", int, 100, "iterations (asynchronous modes: steps per worker)"),
    Option("delay", str, "none", "straggler delay: none, exp:MEAN, ..., or a plug-in MODULE:CLASS[:ARGS]"),
    Option("delay-scale-with-load", bool, False, "multiply each pause by the worker's load", flag=True),
    Option("seed", int, 0, "seed of data, initial point, codes and delays"),
    Option("out", str, "results", "parent directory of the run directory"),
    Option("name", str, None, "run directory name (default: scheme, workers and time)"),
    Option("timeout", float, None, "abort the run after this many seconds (summary status timeout)"),
    Option("checkpoint-every", int, 0, "save a checkpoint every K iterations (0: never)"),
    Option("resume", str, None, "continue the run in this run directory from its last checkpoint"),
    Option("record-delays", str, None, "write the workers' measured compute seconds to this CSV (a trace:FILE)"),
    Option("track-gradient-error", bool, False, "record ||g_hat - g|| / ||g|| per iteration (off the clock)",
           flag=True),
    Option("quiet", bool, False, "no progress line (it is drawn on rank 0 only when stderr is a terminal)",
           flag=True),
    # asynchronous modes and the allreduce/local baselines (see gdcode.runtime.hogwild, gossip, allreduce)
    Option("batch-size", int, 0, "hogwild, gossip, allreduce, local: rows per worker step (0: the worker's "
           "whole partition)"),
    Option("threads", int, 1, "hogwild: threads per worker running the lock-free Hogwild kernel"),
    Option("pull-every", int, 1, "hogwild: a worker's steps between pulls of the server's newest model"),
    Option("max-staleness", int, None, "hogwild: drop updates computed on a model more than K versions old "
           "(default: apply all)"),
    Option("mixing", str, "pairwise", "gossip: mixing rule", choices=("pairwise", "elastic", "push-sum")),
    Option("gossip-prob", float, 0.5, "gossip: probability that a worker gossips before a step"),
    Option("gossip-period", int, 0, "gossip: gossip every K steps instead (0: use --gossip-prob)"),
    Option("interpolation", str, "clock", "gossip pairwise: weight f of the peer's model: clock "
           "(c_peer/(c+c_peer)), constant (--alpha) or loss (loss/(loss+loss_peer))",
           choices=("constant", "clock", "loss")),
    Option("alpha", float, 0.5, "gossip: pairwise constant weight f, elastic coefficient alpha"),
    Option("peer-selection", str, "uniform", "gossip pairwise: uniform, or flow (peers that time out are "
           "picked less)", choices=("uniform", "flow")),
    Option("peer-timeout", float, 0.1, "gossip pairwise: seconds a worker waits after its step for a peer's "
           "answer"),
    Option("eval-every", float, 0.2, "hogwild, gossip: seconds between evaluations of the current or "
           "averaged model (rank 0, off the workers' path)"),
    Option("average-every", int, 10, "local: steps between model averages (0: averaged only at the end)"),
)

#: options that only coded mode has
CODED_ONLY = ("checkpoint_every", "resume", "record_delays", "track_gradient_error")

#: options a resumed run may change; every other one comes from the run's metadata.json
RESUME_OVERRIDES = ("iterations", "timeout", "checkpoint_every", "target_loss", "resume", "quiet")

OPTION_BY_DEST = {opt.dest: opt for opt in OPTIONS}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of :data:`OPTIONS` to ``parser`` with a default of "not given"."""
    parser.add_argument("config", nargs="?", help="TOML file of options (command-line options override it)")
    for opt in OPTIONS:
        if opt.flag:
            parser.add_argument(f"--{opt.name}", dest=opt.dest, action="store_const", const=True,
                                default=None, help=opt.help)
            parser.add_argument(f"--no-{opt.name}", dest=opt.dest, action="store_const", const=False,
                                default=None, help=argparse.SUPPRESS)
        else:
            parser.add_argument(f"--{opt.name}", dest=opt.dest, type=str, default=None,
                                metavar=opt.dest.upper(), help=_help(opt))


def _help(opt: Option) -> str:
    extra = f" {{{','.join(opt.choices)}}}" if opt.choices else ""
    return f"{opt.help}{extra} (default: {opt.default})"


def _convert(opt: Option, value: Any, origin: str) -> Any:
    if value is None:
        return None
    try:
        if opt.flag or opt.type is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if opt.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return opt.type(value)
    except (TypeError, ValueError):
        kind = "true or false" if opt.flag else opt.type.__name__
        raise ConfigError(f"--{opt.name} {value!r} ({origin}) is not a valid {kind}") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; ConfigError naming ``what`` and the file when it is missing or invalid."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config: option names as keys (dashes or underscores), flat or under ``[run]``."""
    p = Path(path)
    data = read_toml(p, "config file")
    data = data.get("run", data)
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            continue  # other tables (e.g. experiment sweeps) are not run options
        dest = key.replace("-", "_")
        if dest not in OPTION_BY_DEST:
            raise ConfigError(f"config file {p}: unknown option {key!r}; "
                              f"known: {', '.join(o.name for o in OPTIONS)}")
        out[dest] = _convert(OPTION_BY_DEST[dest], value, str(p))
    return out


def merge(args: argparse.Namespace | None = None, toml: dict | None = None,
          **overrides: Any) -> dict[str, Any]:
    """Defaults, then ``toml``, then the given command-line ``args``, then ``overrides``."""
    values = {opt.dest: opt.default for opt in OPTIONS}
    values.update(toml or {})
    if args is not None:
        for opt in OPTIONS:
            given = getattr(args, opt.dest, None)
            if given is not None:
                values[opt.dest] = _convert(opt, given, "command line")
    values.update(overrides)
    return values


@dataclasses.dataclass
class RunConfig:
    """Every resolved option of one run (attribute names are the option names with underscores)."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@contextlib.contextmanager
def flag_errors(flag: str, value: Any = None) -> Iterator[None]:
    """Turn a library ``ValueError`` raised inside into ``ConfigError("FLAG VALUE: message")``."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:
        shown = "" if value is None else f" {value!r}"
        raise ConfigError(f"{flag}{shown}: {exc}") from None


def resolve(values: dict[str, Any], check_code: bool = True) -> RunConfig:
    """Check every option that can be checked without MPI and return the config.

    ``check_code=False`` skips the numerical check of the code's decodes (seconds for a
    large cyclic code), for ranks of a job whose launcher has already made it.

    Raises
    ------
    ConfigError
        Naming the bad option and what is allowed.
    """
    from gdcode import codes, delays, models, optim
    from gdcode.data import parse_dataset_spec

    v = dict(values)
    for opt in OPTIONS:
        if opt.choices and v[opt.dest] not in opt.choices:
            raise ConfigError(f"--{opt.name} {v[opt.dest]!r} is not one of: {', '.join(opt.choices)}")
    W, S = v["workers"], v["stragglers"]
    _require(W >= 1, f"--workers {W} must be at least 1")
    _require(0 <= S < W, f"--stragglers {S} must satisfy 0 <= S < W (W = {W})")
    _require(v["iterations"] >= 1, f"--iterations {v['iterations']} must be a positive integer")
    _require(v["lr"] > 0, f"--lr {v['lr']} must be positive")
    _require(v["l2"] is None or v["l2"] >= 0, f"--l2 {v['l2']} must be non-negative")
    _require(0 <= v["test_fraction"] < 1, f"--test-fraction {v['test_fraction']} must be in [0, 1)")
    _require(v["timeout"] is None or v["timeout"] > 0, f"--timeout {v['timeout']} must be positive")
    _require(v["checkpoint_every"] >= 0, f"--checkpoint-every {v['checkpoint_every']} must be >= 0")
    with flag_errors("--lr, --lr-schedule, --lr-step-every, --lr-decay"):
        schedule = optim.Schedule(v["lr"], v["lr_schedule"], v["lr_step_every"], v["lr_decay"])
    _require(0 <= v["momentum"] < 1, f"--momentum {v['momentum']} must be in [0, 1)")
    with flag_errors("--update", v["update"]):
        optim.make(v["update"], [0.0], schedule, **optim.rule_options(v["update"], v))
    if v["collect"] is not None:
        _require(1 <= v["collect"] <= W, f"--collect {v['collect']} must be between 1 and W = {W}")
    with flag_errors("--model", v["model"]):
        models.get(v["model"])
    with flag_errors("--delay", v["delay"]):
        delays.parse(v["delay"], n_workers=W)
    parse_dataset_spec(v["dataset"])
    if v["mode"] == "coded":
        try:
            codes.get_class(v["scheme"])
            code = codes.build(v["scheme"], n_workers=W, n_stragglers=S, seed=v["seed"],
                               **code_options(v))
            if check_code:
                codes.check_usable(code)
        except ValueError as exc:
            raise ConfigError(f"--scheme {v['scheme']}: {exc}") from None
    else:
        _check_async(v)
    _check_out_dir(v["out"])
    return RunConfig(v)


def _check_async(v: dict[str, Any]) -> None:
    """Options of the modes other than coded (``--scheme``, ``--stragglers`` and ``--collect`` are
    coded-mode options that these modes ignore, so one TOML file serves a whole comparison)."""
    mode = v["mode"]
    for dest in CODED_ONLY:
        if v[dest] not in (None, False, 0):
            raise ConfigError(f"--{dest.replace('_', '-')} is available in --mode coded only, not --mode {mode}")
    _require(v["batch_size"] >= 0, f"--batch-size {v['batch_size']} must be >= 0 (0: whole partition)")
    _require(v["eval_every"] > 0, f"--eval-every {v['eval_every']} must be positive (seconds)")
    if mode == "hogwild":
        _require(v["update"] == "gd", f"--mode hogwild applies plain SGD updates on the server; use --update gd "
                                      f"(not {v['update']})")
        _require(v["pull_every"] >= 1, f"--pull-every {v['pull_every']} must be at least 1")
        _require(v["max_staleness"] is None or v["max_staleness"] >= 0,
                 f"--max-staleness {v['max_staleness']} must be >= 0")
        _require(v["threads"] >= 1, f"--threads {v['threads']} must be at least 1")
        from gdcode.runtime.hogwild import check_threads  # no MPI at import

        check_threads(v["threads"])
        if v["threads"] > 1:
            from gdcode import models

            with flag_errors("--model", v["model"]):
                model = models.get(v["model"])
            _require(model.supports_hogwild_threads, f"--threads {v['threads']}: --model {v['model']} has no "
                                                     "lock-free Hogwild kernel; use --threads 1")
    if mode == "gossip":
        _require(v["workers"] >= 2, f"--mode gossip needs at least 2 workers (--workers {v['workers']})")
        _require(0 <= v["gossip_prob"] <= 1, f"--gossip-prob {v['gossip_prob']} must be in [0, 1]")
        _require(v["gossip_period"] >= 0, f"--gossip-period {v['gossip_period']} must be >= 0")
        _require(0 < v["alpha"] <= 1, f"--alpha {v['alpha']} must be in (0, 1]")
        _require(v["peer_timeout"] > 0, f"--peer-timeout {v['peer_timeout']} must be positive (seconds)")
    if mode == "local":
        _require(v["average_every"] >= 0, f"--average-every {v['average_every']} must be >= 0 (0: only at the end)")


def code_options(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword options passed to :func:`gdcode.codes.build` from the run options."""
    from gdcode import codes

    accepted = codes.accepted_options(values["scheme"])
    opts: dict[str, Any] = parse_code_options(values.get("code_options"))
    unknown = sorted(set(opts) - accepted)
    if unknown:
        raise ConfigError(f"--code-options {', '.join(unknown)}: --scheme {values['scheme']} takes "
                          f"{', '.join(sorted(accepted - {'partition_sizes'})) or 'no options'}")
    if values.get("collect") is not None:
        if "collect" not in accepted:
            raise ConfigError(f"--collect applies to approximate codes; --scheme {values['scheme']} "
                              "does not take it")
        opts["collect"] = values["collect"]
    return opts


def parse_code_options(text: str | None) -> dict[str, Any]:
    """``KEY=VALUE,...`` into a dict; values become int, float or bool where they read as one."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--code-options {text!r}: write KEY=VALUE[,KEY=VALUE...]")
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


def _check_out_dir(out: str) -> None:
    """Create ``--out`` if needed and prove it writable, before any job starts."""
    import tempfile

    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".gdcode-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out} is not a writable directory ({exc.strerror}); "
                          "choose another --out") from None
