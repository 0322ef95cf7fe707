"""Whether this install has compiled its kernels yet.

The kernels are numba functions compiled on first use and cached on disk (``cache=True``: next to
the source, or under NUMBA_CACHE_DIR). A fresh install compiles them during its first job, which
makes that job's first stages seconds slower for no visible reason; the job says so once.
"""

from __future__ import annotations

import importlib
import os
import pathlib

_ROOT = pathlib.Path(__file__).parent


def kernel_modules() -> list[str]:
    """The package's modules that define cached kernels, found in its source (not a list kept by
    hand, which drifts as kernels are added).

    >>> {"sgns", "graph.walks"} <= set(kernel_modules())
    True
    """
    marker = "njit(" + "cache=True"  # split, so this module does not find itself
    return [".".join(p.relative_to(_ROOT).with_suffix("").parts) for p in sorted(_ROOT.rglob("*.py"))
            if marker in p.read_text(encoding="utf-8")]


def _index_files() -> list[str]:
    """The cache index file of every kernel (numba's FunctionCache keeps one per function)."""
    paths = []
    for name in kernel_modules():
        module = importlib.import_module(f"{__package__}.{name}")
        for value in vars(module).values():
            cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
            if getattr(value, "__module__", None) == module.__name__ and cache_file is not None:
                paths.append(cache_file._index_path)
    return paths


def fresh() -> bool:
    """True when no kernel of this install is cached yet (its first job compiles them all)."""
    try:
        paths = _index_files()
    except Exception:  # numba's cache internals moved: say nothing rather than fail a job
        return False
    return bool(paths) and not any(os.path.exists(p) for p in paths)
