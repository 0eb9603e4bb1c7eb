"""Errors that the command line turns into a one-line message and exit code 2.

Library modules raise ``ValueError`` in library terms (parameter names and values); the set-up
(:mod:`gdcode.problem`) names the run option a value came from with :class:`OptionError`,
and only the command layer spells an option as a flag (:meth:`OptionError.flag_message`).
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Bad input: an option, a spec, a file or a combination; the message names the problem and the fix."""


class OptionError(ConfigError):
    """A bad value of one run option.

    Parameters
    ----------
    option : str
        The option's name with underscores (a :class:`gdcode.options.RunOptions` field).
    value
        The value given.
    message : str
        What is wrong and what is allowed, e.g. ``"must be > 0"``.
    """

    def __init__(self, option: str, value: Any, message: str) -> None:
        super().__init__(option, value, message)
        self.option, self.value, self.message = option, value, message

    def __str__(self) -> str:
        return f"{self.option} = {self.value!r}: {self.message}"

    def flag_message(self) -> str:
        """The message as the command line says it: ``--lr-decay 2.0: must be in (0, 1]``."""
        flag = "--" + self.option.replace("_", "-")
        value = "" if self.value is None else f" {self.value}"
        return f"{flag}{value}: {self.message}"


#: exit codes of ``gdcode run`` (a run ended by SIGTERM or SIGHUP exits with 128 + the signal's number)
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_WRITE_FAILED = 4
EXIT_FAILED = 5
EXIT_DIVERGED = 6
