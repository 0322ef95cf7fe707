"""The only module that talks to storage (local paths, ``s3://``, any fsspec URL).

Everything is addressed by URL plus ``storage_options`` (passed to fsspec, never logged).
Backend errors surface as built-in exceptions (FileNotFoundError, PermissionError,
FileExistsError); transient ones are retried here, in one place, and end as TransientError.

Credentials reach S3 either through ``storage_options`` (``key``, ``secret``, ``token``,
``endpoint_url`` or ``client_kwargs={"endpoint_url": ...}``; they travel inside Dask tasks)
or through the usual AWS sources of each process (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, config files,
instance roles).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import time
from typing import Any, Callable, Iterator, Mapping, TypeVar

import fsspec
import fsspec.compression
from fsspec.core import url_to_fs
from fsspec.utils import get_protocol
from fsspec.utils import infer_compression, read_block as _read_block

from .errors import AccessDenied, DataError, NotFound, TransientError

log = logging.getLogger("nsdist")
T = TypeVar("T")
Options = Mapping[str, Any] | None

RETRIES = 5
BACKOFF = 0.5  # seconds before the first retry; doubles each time
# No retry starts this long after the first attempt: a dead store fails the job in about a minute
# (exit 75, for the scheduler's own retry) instead of hanging it.
RETRY_SECONDS = 60.0
# Under that loop, s3fs retries each request (5 times by default, each up to its 15 s read
# timeout) and botocore each of those (5 attempts): a silent endpoint would hold one call for
# minutes, unseen. Unless storage_options or AWS_MAX_ATTEMPTS / AWS_RETRY_MODE configure botocore's
# retries, each request gets 2 tries from s3fs (a failed multipart part is retried alone) and 1
# from botocore, so the retries that take time are the ones logged here.
S3FS_RETRIES = 2
S3_RETRIES = {"total_max_attempts": 1}
CHUNK = 16 * 2**20  # bytes per read when streaming big objects (bounds temporary copies)

# OSError errnos that mean "the service is busy or the network hiccuped", not "your request is
# wrong". s3fs maps SlowDown/503 to EBUSY and InternalError/500 to EREMOTEIO.
_TRANSIENT_ERRNOS = {
    errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
    errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
    getattr(errno, "EREMOTEIO", errno.EIO),
}
# HTTP statuses worth retrying: throttling, conflicts between concurrent conditional writes
# (S3 answers 409 ConditionalRequestConflict), server errors.
_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _botocore():
    try:
        import botocore.exceptions as bexc
    except ImportError:  # fsspec without the S3 extra: nothing botocore-specific to map
        return None
    return bexc


def _status_of(e: BaseException) -> int | None:
    """HTTP status of a botocore ClientError (directly or as the cause s3fs chains)."""
    for err in (e, e.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, Mapping):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status is not None:
                return int(status)
    return None


def _aiohttp_errors() -> tuple:
    try:
        import aiohttp
    except ImportError:
        return ()
    return (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                      NotADirectoryError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):  # includes fsspec's FSTimeoutError
        return True
    bexc = _botocore()
    if bexc is not None and isinstance(e, (bexc.ConnectionError, bexc.HTTPClientError)):
        return True  # endpoint unreachable, connect/read timeouts, connection closed mid-body
    if isinstance(e, _aiohttp_errors()):  # server disconnected mid-body after s3fs's own retries
        return True
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return True
    return _status_of(e) in _TRANSIENT_STATUS


_NO_CREDENTIALS = "no usable storage credentials"


def _translate(e: BaseException) -> BaseException | None:
    """Map backend errors that s3fs leaves untranslated to built-in exceptions (None: keep e)."""
    bexc = _botocore()
    if bexc is not None and isinstance(e, (bexc.NoCredentialsError, bexc.PartialCredentialsError,
                                           bexc.CredentialRetrievalError)):
        return PermissionError(
            f"{_NO_CREDENTIALS} ({type(e).__name__}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or a profile/role) on the client and the workers, or give "
            "key/secret in storage_options"
        )
    if isinstance(e, (FileNotFoundError, PermissionError, FileExistsError)):
        return None
    status = _status_of(e)
    if status in (401, 403):
        return PermissionError(f"access denied ({_short(e)})")
    if status == 404:
        return FileNotFoundError(f"not found ({_short(e)})")
    return None


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


_SECRET_KEYS = ("secret", "token", "key", "password", "sas", "credential", "session")
_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


class Store(Mapping):
    """A job's way to its storage: the fsspec options (S3 endpoint, credentials), bound once.

    It is the options, as a read-only mapping, so it goes wherever options go (every function
    here takes it as ``storage_options``), and it carries the calls the job makes, so the job
    passes one object instead of threading the options through every call. It travels to the
    workers as an argument of Dask tasks, and whatever shows a task's arguments (Dask's task repr
    in "Compute Failed" logs, a debugger, a scheduler inspection) would show credentials in a
    plain dict: its repr shows the keys only. It pickles (and compares) like the dict it wraps,
    and ``dict(store)`` is the plain mapping fsspec takes.

    >>> store = Store({"key": "AKIA", "secret": "s3cr3t"})
    >>> store, store["secret"], store == {"key": "AKIA", "secret": "s3cr3t"}
    (Store({'key': '***', 'secret': '***'}), 's3cr3t', True)
    """

    __slots__ = ("_options",)

    def __init__(self, options: Mapping[str, Any] | None = None):
        self._options = dict(options or {})

    def __getitem__(self, key: str) -> Any:
        return self._options[key]

    def __iter__(self):
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def __repr__(self) -> str:
        return f"Store({ {k: '***' for k in self._options} })"

    def __reduce__(self):
        return (Store, (self._options,))

    # The calls a job makes, with its options bound.
    @staticmethod
    def join(base: str, *parts: str) -> str:
        return join(base, *parts)  # the module's join: a function body does not see class names

    def exists(self, url: str) -> bool:
        return exists(url, self)

    def read_json(self, url: str) -> Any:
        return read_json(url, self)

    def remove(self, url: str, recursive: bool = False) -> None:
        remove(url, self, recursive=recursive)

    def expand(self, urls) -> list[tuple[str, int]]:
        return expand(urls, self)

    def scrub(self, text: str) -> str:
        return scrub(text, self)

    def is_local(self, url: str) -> bool:
        return is_local(filesystem(url, self)[0])

    def check_writable(self, url: str) -> None:
        check_writable(url, self)


def _secrets(options: Any) -> list[str]:
    """Every string value under a storage_options key that may hold a credential."""
    found: list[str] = []
    if isinstance(options, Mapping):
        for k, v in options.items():
            if isinstance(v, str) and any(s in str(k).lower() for s in _SECRET_KEYS) and len(v) >= 4:
                found.append(v)
            elif isinstance(v, (Mapping, list, tuple)):
                found += _secrets(v)
    elif isinstance(options, (list, tuple)):
        for v in options:
            found += _secrets(v)
    return found


def scrub(text: str, storage_options: Options = None) -> str:
    """Remove credentials from a message: URL user info and secret storage option values.

    >>> scrub("http://user:pw@minio:9000/b failed for KEY123", {"key": "KEY123"})
    'http://***@minio:9000/b failed for ***'
    """
    text = _URL_USERINFO.sub(r"\1***@", text)
    for value in sorted(_secrets(storage_options), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


# What a failed call was doing, by the function's name, for messages.
_VERBS = {"expand": "list", "read_block": "read", "size": "read the size of", "read_range": "read",
          "read_bytes": "read", "write_bytes": "write", "create_exclusive": "create", "exists": "check",
          "sha256": "read", "walk": "list", "listdir": "list", "remove": "delete", "open_read": "read",
          "open_write": "write"}


def _described(e: BaseException, what: str, storage_options: Options) -> BaseException | None:
    """``e`` as an AccessDenied or NotFound that names the operation, the URL and the fix (None:
    not a storage refusal; ``e`` stands). ``what``: "<function> <url>". s3fs raises its own
    PermissionError and FileNotFoundError (with messages such as "Forbidden" that name neither);
    botocore's errors it leaves untranslated are mapped by their HTTP status."""
    if isinstance(e, (AccessDenied, NotFound)):
        return None
    if isinstance(e, NotADirectoryError):  # a local path runs through a file: nothing can be there
        e = FileNotFoundError(f"a part of the path is a file, not a directory: {e}")
    mapped = e if isinstance(e, (PermissionError, FileNotFoundError)) else _translate(e)
    if not isinstance(mapped, (PermissionError, FileNotFoundError)):
        return None
    name, _, url = what.partition(" ")
    doing = f"{_VERBS.get(name, name.replace('_', ' '))} {url}".strip()
    detail = str(mapped) or type(e).__name__
    if isinstance(mapped, FileNotFoundError):
        return NotFound(scrub(f"not found: could not {doing} ({detail}); check the URL", storage_options))
    if detail.startswith(_NO_CREDENTIALS):  # _translate's message says what to set
        return AccessDenied(scrub(f"access denied: could not {doing}: {detail}", storage_options))
    return AccessDenied(scrub(
        f"access denied: could not {doing} ({detail}); check that the credentials on the client and on every "
        "worker may do this there (storage_options, or AWS_* variables and profiles)", storage_options))


@contextlib.contextmanager
def _storage_call(what: str, storage_options: Options):
    """Errors of the calls inside, described (``_described``): streams are not retried, but
    their refusals name what failed like every other call here."""
    try:
        yield
    except Exception as e:
        described = _described(e, what, storage_options)
        if described is None:
            raise
        raise described from e


def _on_failure(e: Exception, attempt: int, storage_options: Options, started: float,
                what: str = "storage call") -> None:
    """Sleep before the next attempt if ``e`` is transient and the budget allows (saying so in one
    log line), else raise the mapped error. ``started``: time.monotonic() of the first attempt."""
    if _is_transient(e):
        wait = BACKOFF * 2**attempt
        if attempt < RETRIES - 1 and time.monotonic() - started + wait < RETRY_SECONDS:
            log.warning("%s", scrub(f"storage: {what} failed ({_short(e)}); attempt {attempt + 1} of {RETRIES}, "
                                    f"retrying in {wait:.1f} s", storage_options),
                        extra={"stage": "storage_retry", "attempt": attempt + 1, "attempts": RETRIES,
                               "wait_seconds": wait, "error": type(e).__name__})
            time.sleep(wait)
            return
        raise TransientError(scrub(
            f"storage unavailable after {attempt + 1} attempt(s) in {time.monotonic() - started:.0f} s ({_short(e)}); "
            "retry the job", storage_options)) from e
    described = _described(e, what, storage_options)
    if described is not None:
        raise described from e
    raise e


def retry(fn: Callable[..., T]) -> Callable[..., T]:
    """The one place where storage calls are retried and backend errors are mapped.

    Transient failures are retried with exponential backoff, then raised as TransientError
    (exit code 75). Credentials never reach a message: any message built here is scrubbed.
    Only idempotent calls are wrapped (reads, whole-object writes, deletes).
    """
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        for attempt in range(RETRIES):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                bound = sig.bind_partial(*args, **kwargs).arguments
                url = next((v for v in bound.values() if isinstance(v, str)), "")
                what = f"{fn.__name__.lstrip('_')} {url}".strip()
                _on_failure(e, attempt, bound.get("storage_options"), started, what)
        raise AssertionError("unreachable")

    return wrapper


def filesystem(url: str, storage_options: Options = None):
    """URL -> (fsspec filesystem, path inside it).

    S3 listings are not cached: a long-lived reader (a service following LATEST, a test) would
    otherwise be told a just-published manifest does not exist.
    """
    options = dict(storage_options or {})
    if get_protocol(url) in ("s3", "s3a"):
        options.setdefault("use_listings_cache", False)
        bounded = _bound_s3_retries(options)
        fs, path = url_to_fs(url, **options)
        if bounded:
            fs.retries = S3FS_RETRIES  # s3fs reads its retry count from the instance
        return fs, path
    return url_to_fs(url, **options)


def _bound_s3_retries(options: dict) -> bool:
    """Set botocore's retries in ``options`` to S3_RETRIES unless the user configured them;
    whether it did.

    >>> o = {}; _bound_s3_retries(o), o["config_kwargs"]["retries"] == S3_RETRIES
    (True, True)
    >>> _bound_s3_retries({"config_kwargs": {"retries": {"mode": "adaptive"}}})
    False
    """
    config = dict(options.get("config_kwargs") or {})
    if "retries" in config or {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & set(os.environ):
        return False
    options["config_kwargs"] = {**config, "retries": dict(S3_RETRIES)}
    return True


def is_local(fs) -> bool:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return protocol in ("file", "local")


def absolute(url: str) -> str:
    """A URL that means the same from any working directory: local paths made absolute, other
    URLs as they are.

    >>> absolute("s3://bucket/out"), absolute("/data/out")
    ('s3://bucket/out', '/data/out')
    """
    return url if "://" in url else os.path.abspath(url)


def join(base: str, *parts: str) -> str:
    """Join URL parts with '/': join('s3://b/out/', 'runs', 'x') -> 's3://b/out/runs/x'."""
    base = base.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def _unstrip(fs, path: str) -> str:
    """Turn a filesystem path back into a URL with its protocol (local paths stay plain)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"}


def _makedirs_for(fs, path: str) -> None:
    # Object stores have no directories. On S3, makedirs would HEAD the bucket (needs
    # s3:ListBucket, which write-only roles lack) and even *create* a missing bucket.
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    parent = posixpath.dirname(path)
    if parent and not _OBJECT_STORES.intersection(protocols):
        fs.makedirs(parent, exist_ok=True)


@retry
def expand(urls: list[str] | tuple[str, ...], storage_options: Options = None) -> list[tuple[str, int]]:
    """Expand globs and directories into (url, size) files, sorted; DataError if nothing matches."""
    found: dict[str, int] = {}
    for url in urls:
        fs, path = filesystem(url, storage_options)
        if fs.isdir(path):
            paths = [p for p in fs.find(path) if not posixpath.basename(p).startswith((".", "_"))]
        elif any(ch in path for ch in "*?["):
            paths = fs.glob(path)
        elif fs.exists(path):
            paths = [path]
        else:
            raise DataError(scrub(f"corpus {url!r} does not exist; check the path or URL", storage_options))
        if not paths:
            raise DataError(scrub(f"corpus {url!r} matches no files; check the glob", storage_options))
        for p in sorted(paths):
            info = fs.info(p)
            if info.get("type") == "file":
                found[_unstrip(fs, p)] = int(info["size"])
    return sorted(found.items())


def compression_of(url: str) -> str | None:
    """'corpus.txt.gz' -> 'gzip'; None for uncompressed files."""
    return infer_compression(url)


@retry
def read_block(url: str, offset: int, length: int | None, storage_options: Options = None) -> bytes:
    """Read the lines that start in [offset, offset+length) of a file (whole file if length None).

    Compressed files cannot be split, so they are always read whole and decompressed.
    """
    compression = compression_of(url)
    with fsspec.open(url, "rb", compression=compression, **dict(storage_options or {})) as f:
        if length is None:
            return f.read()
        return _read_block(f, offset, length, delimiter=b"\n")


def iter_block(url: str, offset: int, length: int | None, storage_options: Options = None,
               piece_bytes: int = 2**20, max_line: int | None = None) -> Iterator[tuple[bytes, bool]]:
    """``read_block``'s bytes as pieces of whole lines of about ``piece_bytes``: (piece, is it the
    last). Memory stays bounded by the piece size (plus the longest line) whatever the block
    size; compressed files are decompressed as a stream. Each range read is retried on its own.

    With ``max_line``, a line longer than that comes in pieces instead, each cut after a space,
    tab, CR, VT or FF byte (never inside a word, nor inside a UTF-8 character): a piece that is
    not the last and does not end with a newline ends inside a line that the next piece
    continues. Memory is then bounded by ``max_line`` plus the longest word.

    >>> import tempfile; path = tempfile.mktemp()
    >>> _ = open(path, "wb").write(b"ab\\ncd\\nef\\ngh")
    >>> list(iter_block(path, 1, 5, piece_bytes=2)), read_block(path, 1, 5)
    ([(b'cd\\n', False), (b'ef\\n', True)], b'cd\\nef\\n')
    """
    if length is None:
        yield from _whole_file(url, storage_options, piece_bytes, max_line)
        return
    fs, path = filesystem(url, storage_options)
    end = _size(fs, path)
    start = 0
    if offset > 0:  # the first line starting after the first newline at or after offset
        # Only inside the block: a newline past it would start no line of this block, and a
        # search to the end of the file would read a one-line file once per block.
        within = _ranges(fs, path, offset, min(end, offset + length), 2**16)
        found = (p + c.find(b"\n") + 1 for p, c in within if b"\n" in c)
        start = next(found, None)
        if start is None or start > offset + length:  # no line starts in the block
            yield b"", True
            return
    # The block ends after the first newline at or after offset + length (or at the end).
    yield from _whole_lines((c for _, c in _ranges(fs, path, start, end, piece_bytes)), offset + length - start,
                            max_line)


class _Source:
    """A raw stream that remembers whether a read of its own failed: a decompressor's error is
    then told apart from the storage's (which keeps its type: missing, denied, unreachable)."""

    def __init__(self, f):
        self.f, self.failed = f, False

    def read(self, n=-1):
        try:
            return self.f.read(n)
        except BaseException:
            self.failed = True
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def _whole_file(url: str, storage_options: Options, piece_bytes: int, max_line: int | None):
    """``iter_block`` of a whole file, decompressed as a stream if its name says so. Data the
    decompressor cannot read is a DataError naming the file: retrying cannot help."""
    compression = compression_of(url)
    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as raw:
        if compression is None:
            yield from _whole_lines(iter(lambda: raw.read(piece_bytes), b""), None, max_line)
            return
        source = _Source(raw)
        try:
            with fsspec.compression.compr[compression](source, mode="rb") as f:
                yield from _whole_lines(iter(lambda: f.read(piece_bytes), b""), None, max_line)
        except MemoryError:
            raise
        except Exception as e:
            if source.failed:
                raise
            raise DataError(scrub(f"corpus file {url!r} is truncated or corrupt ({compression}: {_short(e)}); "
                                  "re-upload it or remove it from --corpus", storage_options)) from None


def _ranges(fs, path: str, pos: int, end: int, n: int) -> Iterator[tuple[int, bytes]]:
    """(position, bytes) of consecutive reads of up to ``n`` bytes from ``pos`` to ``end``."""
    while pos < end:
        data = _read_range(fs, path, pos, min(pos + n, end))
        if not data:  # the file shrank since its size was read
            raise DataError(f"{_unstrip(fs, path)!r} changed while it was read; rerun on a stable corpus")
        yield pos, data
        pos += len(data)


@retry
def _size(fs, path: str) -> int:
    return fs.size(path)


@retry
def _read_range(fs, path: str, start: int, end: int) -> bytes:
    return fs.cat_file(path, start=start, end=end)


def _whole_lines(chunks, limit: int | None, max_line: int | None = None) -> Iterator[tuple[bytes, bool]]:
    """Re-cut a stream of byte chunks after their last newline: (piece, is it the last). With
    ``limit``, the stream ends after its first newline at or after that offset; with
    ``max_line``, a longer line is cut after its last whitespace byte (``iter_block``)."""
    parts, held, pos = [], 0, 0
    for chunk in chunks:
        if limit is not None:
            i = chunk.find(b"\n", max(limit - pos, 0))
            if i >= 0:
                yield b"".join(parts + [chunk[:i + 1]]), True
                return
        pos += len(chunk)
        cut = chunk.rfind(b"\n") + 1
        if not cut and max_line is not None and held + len(chunk) > max_line:
            cut = _last_space(chunk) + 1  # 0 inside a word longer than a chunk: held on to
        if cut:
            yield b"".join(parts + [chunk[:cut]]), False
            parts, held = [chunk[cut:]], len(chunk) - cut
        else:
            parts.append(chunk)  # a line longer than a chunk: joined once its end arrives
            held += len(chunk)
    yield b"".join(parts), True


_CUT_SPACE = b" \t\r\v\f"  # whitespace to the tokenizer, never part of a UTF-8 character


def _last_space(chunk: bytes) -> int:
    """Index of the last space, tab, CR, VT or FF byte of ``chunk``; -1 if none.

    >>> _last_space(b"ab c\\td"), _last_space(b"abc")
    (4, -1)
    """
    i = chunk.rfind(b" ")
    for c in _CUT_SPACE[1:]:
        i = max(i, chunk.rfind(bytes([c]), i + 1))
    return i


@retry
def read_bytes(url: str, storage_options: Options = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def _local_atomic_write(fs, path: str, data: bytes) -> None:
    # Local files are rewritten in place by pipe_file: a concurrent reader could see a torn
    # LATEST. Write a sibling temp file and rename it over (atomic on POSIX), as S3 PUTs are.
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@retry
def write_bytes(url: str, data: bytes, storage_options: Options = None) -> None:
    """Write (overwrite) a whole small object atomically: readers see the bytes before or after, never a mix."""
    fs, path = filesystem(url, storage_options)
    _makedirs_for(fs, path)
    if is_local(fs):
        _local_atomic_write(fs, path, data)
    else:
        fs.pipe_file(path, data)  # one PUT: atomic on S3


def create_exclusive(url: str, data: bytes, storage_options: Options = None) -> None:
    """Create a small object only if it does not exist yet; FileExistsError otherwise.

    ``data`` must identify the writer (e.g. a run id plus host and pid): it is how a retry
    tells its own earlier write (whose response was lost) from someone else's.

    On S3 this is a conditional PUT (``If-None-Match: *``, s3fs mode "xb"). Some S3-compatible
    stores ignore that header and overwrite silently; reading the object back catches the
    loser of such a race in all but the narrowest interleavings.
    """
    fs, path = filesystem(url, storage_options)
    _makedirs_for(fs, path)
    started = time.monotonic()
    for attempt in range(RETRIES):
        try:
            with fs.open(path, "xb") as f:
                f.write(data)
            break
        except FileExistsError:
            if attempt > 0 and _read_or_none(url, storage_options) == data:
                return  # an earlier attempt landed but its response was lost
            raise FileExistsError(f"{url} already exists (claimed by another writer)") from None
        except Exception as e:
            _on_failure(e, attempt, storage_options, started, f"create {url}")
    if _read_or_none(url, storage_options) != data:
        raise FileExistsError(f"{url} was overwritten by another writer (the store ignores If-None-Match)")


def _read_or_none(url: str, storage_options: Options) -> bytes | None:
    try:
        return read_bytes(url, storage_options)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def open_write(url: str, storage_options: Options = None):
    """A binary writer for a large object (streamed; on S3 a multipart upload).

    Not retried here (a stream cannot be replayed); s3fs retries each part itself.
    """
    with _storage_call(f"open_write {url}", storage_options):
        fs, path = filesystem(url, storage_options)
        _makedirs_for(fs, path)
        with fs.open(path, "wb") as f:
            yield f


@contextlib.contextmanager
def open_read(url: str, storage_options: Options = None, **kwargs):
    """A binary reader; ``kwargs`` go to ``fs.open`` (e.g. ``cache_type="none"``)."""
    with _storage_call(f"open_read {url}", storage_options):
        fs, path = filesystem(url, storage_options)
        with fs.open(path, "rb", **kwargs) as f:
            yield f


def readinto_exact(f, buffer, chunk: int = CHUNK) -> int:
    """Fill ``buffer`` (any writable buffer) from ``f`` in chunks; return the bytes read.

    Chunks bound the temporary copy that file objects without a native readinto (s3fs
    reads into bytes, then copies) make; local files read straight into the buffer.
    Returns fewer bytes than the buffer holds only at end of file.
    """
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        n = f.readinto(view[done:done + chunk])
        if not n:
            break
        done += n
    return done


def check_writable(url: str, storage_options: Options = None) -> None:
    """Fail before any work where ``url`` cannot hold outputs, without writing anything: a local
    path that is a file or lies under one (NotADirectoryError), or a directory this process may
    not write or on a read-only filesystem (PermissionError); on an object store, a read of
    ``url`` tries the endpoint and the credentials (a write permission shows only at the first
    write)."""
    fs, path = filesystem(url, storage_options)
    if not is_local(fs):
        exists(url, storage_options)
        return
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise NotADirectoryError(f"{probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or os.statvfs(probe).f_flag & os.ST_RDONLY:
        raise PermissionError(f"{probe} is not writable")


@retry
def is_file(url: str, storage_options: Options = None) -> bool:
    """Whether ``url`` is one object or file (not a directory or prefix)."""
    fs, path = filesystem(url, storage_options)
    return fs.isfile(path)


@retry
def exists(url: str, storage_options: Options = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


@retry
def size(url: str, storage_options: Options = None) -> int:
    fs, path = filesystem(url, storage_options)
    return int(fs.size(path))


@retry
def sha256(url: str, storage_options: Options = None) -> str:
    """Hex sha256 of an object, streamed (never holds the whole object in memory)."""
    fs, path = filesystem(url, storage_options)
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    with fs.open(path, "rb", cache_type="none") as f:
        while n := readinto_exact(f, buf):
            h.update(memoryview(buf)[:n])
            if n < len(buf):
                break
    return h.hexdigest()


def _modified(info: Mapping[str, Any]) -> _dt.datetime | None:
    """Modification time from an fsspec info dict (local: mtime; S3: LastModified), UTC."""
    value = info.get("LastModified", info.get("mtime", info.get("last_modified", info.get("updated"))))
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)
    return None


@retry
def walk(url: str, storage_options: Options = None) -> list[dict]:
    """Every file under a URL: [{"url", "size", "modified" (UTC datetime or None)}]; [] if none."""
    fs, path = filesystem(url, storage_options)
    fs.invalidate_cache(path)  # admin commands run in long-lived processes: never trust a stale listing
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return []
    return [
        {"url": _unstrip(fs, p), "size": int(info.get("size") or 0), "modified": _modified(info)}
        for p, info in sorted(found.items()) if info.get("type", "file") == "file"
    ]


@retry
def listdir(url: str, storage_options: Options = None) -> list[str]:
    """Names (not paths) directly under a URL; [] if it does not exist."""
    fs, path = filesystem(url, storage_options)
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


@retry
def remove(url: str, storage_options: Options = None, recursive: bool = False) -> None:
    fs, path = filesystem(url, storage_options)
    fs.rm(path, recursive=recursive)
    fs.invalidate_cache(path)


def read_json(url: str, storage_options: Options = None) -> Any:
    """Parse a JSON object (the only structured format nsdist reads besides Parquet/.npy)."""
    raw = read_bytes(url, storage_options)
    try:
        return json.loads(raw)
    except ValueError:
        raise DataError(f"{url!r} is not valid JSON; the output may be corrupt") from None


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def lines(url: str, storage_options: Options = None) -> Iterator[str]:
    """Iterate the text lines of a (small) file, e.g. an evaluation file."""
    data = read_block(url, 0, None, storage_options)
    yield from io.StringIO(data.decode("utf-8"))


# ---------------------------------------------------------------- one file written in parts
# A file too large for one writer is written by many processes, each the part holding its rows,
# then assembled into one file. S3 has no ranged writes; a multipart upload is its way of writing
# one object from many processes: any process may upload a part of an open upload, and the store
# joins the parts in part-number order when the upload completes. Each writer owns ``slots`` part
# numbers and uploads its bytes in chunks of PART_CHUNK (every part of an object but its last must
# hold at least S3_MIN_PART bytes; a writer keeps its last chunk at or above that, so only a
# writer of fewer bytes than that in all can break the rule, and callers plan parts larger).
# Other stores get hidden part files that the completing task concatenates, hashing as it
# copies: the manifest's sha256 needs a pass over the file anyway.

S3_MIN_PART = 5 * 2**20
S3_MAX_PARTS = 10_000
PART_CHUNK = 32 * 2**20


def _is_s3(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocols))


def multipart(url: str) -> bool:
    """Whether a file at ``url`` written in parts is an S3 multipart upload (whose parts but the
    last must hold S3_MIN_PART bytes or more).

    >>> multipart("s3://bucket/out/vectors.npy"), multipart("/data/out/vectors.npy")
    (True, False)
    """
    return get_protocol(url) in ("s3", "s3a")


def _parts_dir(path: str, token: str) -> str:
    """Where the parts of ``path`` wait on stores without multipart uploads (hidden: ``expand``
    and gc's listings skip or remove it with the run)."""
    return posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.parts-{token}")


@retry
def start_parts(url: str, storage_options: Options = None) -> str:
    """Open ``url`` to be written in parts (``write_part``, then ``complete_parts``); its token
    (on S3 the multipart upload's id)."""
    fs, path = filesystem(url, storage_options)
    _makedirs_for(fs, path)
    if _is_s3(fs):
        bucket, key, _ = fs.split_path(path)
        return fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    token = secrets.token_hex(6)
    fs.makedirs(_parts_dir(path, token), exist_ok=True)
    return token


@retry
def _upload_part(url: str, token: str, number: int, data: bytes, storage_options: Options = None) -> str:
    """One part of an S3 multipart upload (idempotent: a retry replaces it); its ETag."""
    fs, path = filesystem(url, storage_options)
    bucket, key, _ = fs.split_path(path)
    return fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=token, PartNumber=number, Body=data)["ETag"]


class _S3Part(io.RawIOBase):
    """A writer of one process's parts of an S3 multipart upload: part numbers ``first``.. in
    chunks of PART_CHUNK bytes, doubling every 16 parts (64 part numbers then take 7.5 GiB), the
    last chunk at least S3_MIN_PART unless it is all there is."""

    def __init__(self, url: str, token: str, first: int, slots: int, storage_options: Options):
        self.url, self.token, self.first, self.slots, self.options = url, token, first, slots, storage_options
        self.buffer, self.etags, self.size = bytearray(), [], 0

    def writable(self):
        return True

    def write(self, b):
        self.buffer += b
        self.size += len(b)
        while len(self.buffer) >= self.chunk + S3_MIN_PART:
            chunk = self.chunk
            self._upload(bytes(self.buffer[:chunk]))
            del self.buffer[:chunk]
        return len(b)

    @property
    def chunk(self) -> int:
        return PART_CHUNK << (len(self.etags) // 16)

    def _upload(self, data: bytes) -> None:
        if len(self.etags) == self.slots:
            raise AssertionError(f"a part of {self.url} needs more than its {self.slots} S3 part numbers")
        number = self.first + len(self.etags)
        self.etags.append([number, _upload_part(self.url, self.token, number, data, self.options)])

    def finish(self) -> None:
        if self.buffer or not self.etags:
            self._upload(bytes(self.buffer))
        self.buffer = bytearray()


def write_part(url: str, token: str, part: int, slots: int, fill, storage_options: Options = None) -> dict:
    """Write part ``part`` of a file opened with ``start_parts``: the bytes ``fill(writer)``
    writes. ``slots``: the S3 part numbers each part may use (S3_MAX_PARTS // parts). Returns the
    part's record for ``complete_parts``. Parts may be written in any order, by any process."""
    with _storage_call(f"write_part {url}", storage_options):
        fs, path = filesystem(url, storage_options)
        if _is_s3(fs):
            w = _S3Part(url, token, part * slots + 1, slots, storage_options)
            fill(w)
            w.finish()
            return {"part": part, "size": w.size, "etags": w.etags}
        with fs.open(posixpath.join(_parts_dir(path, token), f"{part:05d}"), "wb") as f:
            start = f.tell()
            fill(f)
            return {"part": part, "size": f.tell() - start}


def complete_parts(url: str, token: str, records: list[dict], storage_options: Options = None) -> dict:
    """Assemble a file from its parts' records (``write_part``), in part order; its
    ``{size, sha256}`` (on S3 the store joins the parts and the object is then read once to hash
    it; on a local disk the first part becomes the file and the others are appended to it;
    elsewhere the parts are copied into the file and hashed on the way)."""
    records = sorted(records, key=lambda r: r["part"])
    fs, path = filesystem(url, storage_options)
    if is_local(fs) and records:
        return _move_parts(path, _parts_dir(path, token), records)
    if _is_s3(fs):
        bucket, key, _ = fs.split_path(path)
        parts = [{"PartNumber": n, "ETag": etag} for r in records for n, etag in r["etags"]]
        with _storage_call(f"complete_parts {url}", storage_options):
            fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=token,
                       MultipartUpload={"Parts": parts})
        fs.invalidate_cache(path)
        return {"size": size(url, storage_options), "sha256": sha256(url, storage_options)}
    digest, folder = hashlib.sha256(), _parts_dir(path, token)
    with _storage_call(f"complete_parts {url}", storage_options), fs.open(path, "wb") as out:
        total = _append_parts(fs.open, folder, records, out, digest, bytearray(CHUNK))
    fs.rm(folder, recursive=True)
    return {"size": total, "sha256": digest.hexdigest()}


def _append_parts(open_file, folder: str, records: list[dict], out, digest, buf: bytearray) -> int:
    """Append the parts of ``records`` from ``folder`` to ``out`` in order, each read once into
    ``buf`` and hashed on the way (``open_file``: the store's ``open``); the bytes appended."""
    total = 0
    for r in records:
        with open_file(posixpath.join(folder, f"{r['part']:05d}"), "rb") as f:
            while n := readinto_exact(f, buf):
                digest.update(memoryview(buf)[:n])
                out.write(memoryview(buf)[:n])
                total += n
    return total


def _move_parts(path: str, folder: str, records: list[dict]) -> dict:
    """A local file assembled from its parts: the first part becomes the file (a rename) and the
    others are appended, so only 1 - 1/parts of the bytes are written again (new page-cache pages:
    a copy of every part took 150-300 ms for a 16 MB vectors.txt on the development VM). Each part
    is read once to hash the file. A task run again after a lost worker finds the first part
    moved already and cuts the file back to it."""
    digest, first = hashlib.sha256(), posixpath.join(folder, f"{records[0]['part']:05d}")
    with _storage_call(f"complete_parts {path}", None):
        if os.path.exists(first):
            os.replace(first, path)
        os.truncate(path, records[0]["size"])
        buf = bytearray(min(CHUNK, max(r["size"] for r in records)) or 1)
        with open(path, "r+b") as out:
            while n := readinto_exact(out, buf):
                digest.update(memoryview(buf)[:n])
            _append_parts(open, folder, records[1:], out, digest, buf)
            total = out.tell()
        shutil.rmtree(folder)
    return {"size": total, "sha256": digest.hexdigest()}


def abort_parts(url: str, token: str, storage_options: Options = None) -> None:
    """Give up a file opened with ``start_parts``: its parts are deleted (on S3 the upload is
    aborted, or the store would keep, and bill, its parts)."""
    fs, path = filesystem(url, storage_options)
    with contextlib.suppress(FileNotFoundError):
        if _is_s3(fs):
            bucket, key, _ = fs.split_path(path)
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=token)
        else:
            fs.rm(_parts_dir(path, token), recursive=True)


# ---------------------------------------------------------------- reading rows of big files

def local_path(url: str, storage_options: Options = None) -> str | None:
    """The path of ``url`` on this machine's filesystem (for a memory map), or None on other stores."""
    fs, path = filesystem(url, storage_options)
    return path if is_local(fs) else None


RANGES_AT_ONCE, RANGE_BYTES_AT_ONCE = 32, 64 * 2**20  # object storage: ranged GETs in flight at once, and their bytes


def read_ranges(url: str, spans, each, storage_options: Options = None) -> int:
    """Read each (offset, nbytes) of ``spans`` from ``url`` and hand its bytes to ``each(i,
    data)``, in order: ranged reads, nothing else of the file is read. On object storage (one GET
    per span) up to RANGES_AT_ONCE spans, RANGE_BYTES_AT_ONCE bytes, are fetched at once
    (``fs.cat_ranges``, concurrent in s3fs); a local file is read span by span. The bytes read in
    all (fewer than asked: the file ends early)."""
    spans, got = list(spans), 0
    with _storage_call(f"read_ranges {url}", storage_options):
        fs, path = filesystem(url, storage_options)
        if is_local(fs):
            with fs.open(path, "rb") as f:
                for i, (offset, n) in enumerate(spans):
                    f.seek(offset)
                    data = f.read(n)
                    got += len(data)
                    each(i, data)
            return got
        end = _size(fs, path)  # a span past the end reads short, as from a file, not a failed GET
        for batch in _batches(spans):
            ask = [i for i in batch if spans[i][0] < end]
            datas = dict(zip(ask, _cat_ranges(fs, path, [spans[i][0] for i in ask],
                                              [min(end, spans[i][0] + spans[i][1]) for i in ask]) if ask else []))
            for i in batch:
                data = datas.get(i, b"")
                got += len(data)
                each(i, data)
    return got


@retry
def _cat_ranges(fs, path: str, starts: list[int], ends: list[int]) -> list[bytes]:
    return fs.cat_ranges([path] * len(starts), starts, ends, on_error="raise")


def _batches(spans: list) -> list[list[int]]:
    """The spans' indices in consecutive batches of at most RANGES_AT_ONCE spans and, beyond
    one span, RANGE_BYTES_AT_ONCE bytes.

    >>> _batches([(0, 2**25)] * 5), [len(b) for b in _batches([(0, 1)] * 33)]
    ([[0, 1], [2, 3], [4]], [32, 1])
    """
    out, n = [], 0
    for i, (_, size) in enumerate(spans):
        if out and len(out[-1]) < RANGES_AT_ONCE and n + size <= RANGE_BYTES_AT_ONCE:
            out[-1].append(i)
            n += size
        else:
            out.append([i])
            n = size
    return out
