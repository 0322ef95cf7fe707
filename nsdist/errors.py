"""Project errors, each tied to the exit code the CLI returns for it, and the stop request.

0 success, 2 usage or config error, 3 bad input data, 75 transient infrastructure failure
(worth a retry), 130 interrupted (SIGINT, Ctrl-C) and 143 terminated (SIGTERM), 1 anything else.
"""


import threading

# Set by the CLI's SIGINT/SIGTERM handler. Its KeyboardInterrupt can be swallowed (Python ignores
# exceptions raised while a __del__ runs, and Dask's futures release themselves in one), so the
# loops that wait on the cluster check this too (cluster.client.gather_watching).
STOP = threading.Event()


class NsdistError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(NsdistError, ValueError):
    """Bad configuration or usage; the message names the key and the fix."""

    exit_code = 2


class OutOfMemory(ConfigError):
    """The job does not fit the workers' memory: the message names the stage, the workers' limit
    and what to change (more memory or workers, a smaller model or blocks)."""


class UnknownWord(NsdistError, KeyError):
    """A word (or index) the vocabulary does not hold: a usage error, and a ``KeyError`` so that
    gensim-style code (``try: emb[w] except KeyError``) works unchanged."""

    exit_code = 2

    def __init__(self, word, vocab_size: int, message: str | None = None):
        super().__init__(message or f"word {word!r} not in vocabulary ({vocab_size} words)")
        self.word, self.vocab_size = word, vocab_size

    def __str__(self) -> str:  # KeyError's own quotes its message
        return self.args[0]

    def __reduce__(self):  # pickles (Dask ships exceptions) rebuild from the word, not the message
        return type(self), (self.word, self.vocab_size, self.args[0])


class DataError(NsdistError, ValueError):
    """Bad input data (missing corpus, empty vocabulary, corrupt output files)."""

    exit_code = 3


class AccessDenied(NsdistError, PermissionError):
    """Storage refused an operation (credentials, bucket policy): a ``PermissionError`` whose
    message names the operation, the URL and the fix."""

    exit_code = 2


class NotFound(NsdistError, FileNotFoundError):
    """Storage has nothing at a URL: a ``FileNotFoundError`` whose message names the operation,
    the URL and the fix."""

    exit_code = 3


class TransientError(NsdistError):
    """Infrastructure failure worth retrying (workers did not come, storage throttled)."""

    exit_code = 75


class Interrupted(NsdistError):
    """The job was stopped by SIGINT (exit 130) or SIGTERM (exit 143); the message says how to
    resume it."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
