"""Project errors, each tied to the exit code the CLI returns for it.

0 success, 2 usage or config error, 3 bad input data, 75 transient infrastructure failure
(worth a retry), 1 anything else.
"""


class NsdistError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(NsdistError, ValueError):
    """Bad configuration or usage; the message names the key and the fix."""

    exit_code = 2


class DataError(NsdistError, ValueError):
    """Bad input data (missing corpus, empty vocabulary, corrupt output files)."""

    exit_code = 3


class TransientError(NsdistError):
    """Infrastructure failure worth retrying (workers did not come, storage throttled)."""

    exit_code = 75
