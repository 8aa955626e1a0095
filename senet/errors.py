"""Errors the command line reports as a one-line message (no traceback) with a non-zero exit."""


class SenetError(Exception):
    """A problem with the user's input: a path, a file, a dataset, a config or a checkpoint."""


class WeightsError(SenetError):
    """A weight file that cannot be read or does not fit the model (names the keys at fault)."""


class DataError(SenetError):
    """A dataset that cannot be found or read (names the file or folder at fault)."""


class ConfigError(SenetError, ValueError):
    """A bad recipe, key or value (lists the valid ones)."""
