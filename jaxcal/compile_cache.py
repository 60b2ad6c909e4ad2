"""JAX's persistent compilation cache under the user's cache folder, so reruns skip compiling."""

from __future__ import annotations

import math
import os
import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV_VAR = "JAXCAL_COMPILATION_CACHE"
"""Environment variable naming the cache folder; it overrides the default location."""

DEFAULT_MIN_COMPILE_TIME_SECS = 0.0
"""Compilations faster than this are not written. JAX's own default, 1 s, skips most of
jaxcal's (a LeNet-5 train step compiles in 0.4-1.7 s on a 2-core CPU), and even 0.1 s skips
the ~36 small ones (model initialisers, data transforms; ~25 ms each) that a rerun of
`experiments.birdcat --quick` would otherwise compile again before its first step: ~0.9 s."""


def default_directory() -> pathlib.Path:
    """`$JAXCAL_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/jaxcal/jax` (or `~/.cache/jaxcal/jax`)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return pathlib.Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "jaxcal" / "jax"


def enable_compilation_cache(
    directory: str | os.PathLike[str] | None = None,
    *,
    min_compile_time_secs: float = DEFAULT_MIN_COMPILE_TIME_SECS,
) -> pathlib.Path:
    """Turns on JAX's persistent compilation cache for this process.

    Every jitted computation that takes at least `min_compile_time_secs` to compile is written
    to `directory` and, in later processes with the same JAX version, backend and arguments'
    shapes, loaded from there instead of compiled again. Call it before the first computation
    you want cached; calling it again with another folder moves the cache there. To run without
    the cache, do not call it, or set `JAX_ENABLE_COMPILATION_CACHE=false`.

    The cache is trusted code: do not point it at a folder others can write to.

    Args:
        directory: the cache folder (created on first write); default `default_directory()`.
        min_compile_time_secs: seconds >= 0 below which a compilation is not cached.

    Returns:
        The absolute cache folder.

    Raises:
        TypeError: `directory` is not a path or `min_compile_time_secs` not a number.
        ValueError: `directory` is empty or an existing file, or `min_compile_time_secs` is
            negative or not finite.
    """
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path or None, got {type(directory).__name__}")
    if isinstance(min_compile_time_secs, bool) or not isinstance(
        min_compile_time_secs, (int, float)
    ):
        raise TypeError(
            f"min_compile_time_secs must be a number of seconds, got {min_compile_time_secs!r}"
        )
    if not math.isfinite(min_compile_time_secs) or min_compile_time_secs < 0:
        raise ValueError(
            f"min_compile_time_secs must be finite and >= 0, got {min_compile_time_secs!r}"
        )
    if directory is not None and not os.fspath(directory):
        raise ValueError("directory must not be empty; pass None for the default folder")
    path = (default_directory() if directory is None else pathlib.Path(directory)).expanduser()
    path = path.absolute()
    if path.is_file():
        raise ValueError(f"directory {path} is a file, not a folder")
    if jax.config.jax_compilation_cache_dir not in (None, str(path)):
        compilation_cache.reset_cache()  # JAX opens its cache once; let it reopen the new one
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    return path
