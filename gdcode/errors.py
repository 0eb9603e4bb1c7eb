"""Errors that the command line turns into a one-line message and exit code 2."""


class ConfigError(ValueError):
    """A bad option, spec or combination of options; the message names the problem and the fix."""
