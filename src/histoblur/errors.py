"""Exceptions with a sentence a user can act on; the CLI prints them and exits non-zero."""


class HistoblurError(Exception):
    """Base class of every error histoblur raises on purpose."""


class InputError(HistoblurError):
    """An input file or array cannot be used (missing, corrupt, unsupported, wrong size)."""


class ParameterError(HistoblurError):
    """A parameter is out of range or inconsistent with the others."""


class OutputError(HistoblurError):
    """An output location cannot be written."""
