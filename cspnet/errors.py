"""Errors a user can act on: each message is one line that says what is wrong and how to fix it."""


class CspnetError(Exception):
    """Base class for user-facing errors; the CLI prints them as one line."""


class ConfigError(CspnetError, ValueError):
    """An invalid model name, override or argument."""


class InputError(CspnetError, ValueError):
    """An input tensor, file or dataset that cannot be used as given."""
