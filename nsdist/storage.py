"""The only module that talks to storage (local paths, ``s3://``, any fsspec URL).

Everything is addressed by URL plus ``storage_options`` (passed to fsspec, never logged).
Backend errors surface as built-in exceptions (FileNotFoundError, PermissionError,
FileExistsError); transient ones are retried here, in one place.
"""

from __future__ import annotations

import functools
import io
import json
import posixpath
import time
from typing import Any, Callable, Iterator, Mapping, TypeVar

import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression, read_block as _read_block

from .errors import DataError, TransientError

T = TypeVar("T")
Options = Mapping[str, Any] | None

_TRANSIENT = (ConnectionError, TimeoutError)
RETRIES = 4


def retry(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry transient failures with exponential backoff, then raise TransientError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(RETRIES):
            try:
                return fn(*args, **kwargs)
            except _TRANSIENT as e:
                if attempt == RETRIES - 1:
                    raise TransientError(f"storage unavailable ({type(e).__name__}: {e}); retry the job") from e
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper


def filesystem(url: str, storage_options: Options = None):
    """URL -> (fsspec filesystem, path inside it)."""
    return url_to_fs(url, **dict(storage_options or {}))


def join(base: str, *parts: str) -> str:
    """Join URL parts with '/': join('s3://b/out/', 'runs', 'x') -> 's3://b/out/runs/x'."""
    base = base.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def _unstrip(fs, path: str) -> str:
    """Turn a filesystem path back into a URL with its protocol (local paths stay plain)."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else fs.unstrip_protocol(path)


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
            raise DataError(f"corpus {url!r} does not exist; check the path or URL")
        if not paths:
            raise DataError(f"corpus {url!r} matches no files; check the glob")
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


@retry
def read_bytes(url: str, storage_options: Options = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


@retry
def write_bytes(url: str, data: bytes, storage_options: Options = None) -> None:
    """Write (overwrite) a whole object; parents are created on local filesystems."""
    fs, path = filesystem(url, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


@retry
def create_exclusive(url: str, data: bytes, storage_options: Options = None) -> None:
    """Create an object only if it does not exist (FileExistsError otherwise)."""
    fs, path = filesystem(url, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "xb") as f:
        f.write(data)


def open_write(url: str, storage_options: Options = None):
    """A binary writer for a large object (streamed; on S3 a multipart upload)."""
    fs, path = filesystem(url, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def open_read(url: str, storage_options: Options = None):
    fs, path = filesystem(url, storage_options)
    return fs.open(path, "rb")


@retry
def exists(url: str, storage_options: Options = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


@retry
def size(url: str, storage_options: Options = None) -> int:
    fs, path = filesystem(url, storage_options)
    return int(fs.size(path))


@retry
def listdir(url: str, storage_options: Options = None) -> list[str]:
    """Names (not paths) directly under a URL; [] if it does not exist."""
    fs, path = filesystem(url, storage_options)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


@retry
def remove(url: str, storage_options: Options = None, recursive: bool = False) -> None:
    fs, path = filesystem(url, storage_options)
    fs.rm(path, recursive=recursive)


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
