"""Tests of jaxcal.compile_cache: where the cache goes, bad arguments, and a real cache hit."""

from __future__ import annotations

import logging
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from jaxcal import compile_cache


@pytest.fixture
def restore_jax_cache():
    """Puts JAX's cache settings back afterwards, so other tests do not write to tmp folders."""
    directory = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    yield
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    compilation_cache.reset_cache()


def test_default_directory_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_directory() == tmp_path / "xdg" / "jaxcal" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.default_directory() == tmp_path / "home" / ".cache" / "jaxcal" / "jax"
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "mine"))
    assert compile_cache.default_directory() == tmp_path / "mine"


def test_enable_sets_jax_config(restore_jax_cache, monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
    path = compile_cache.enable_compilation_cache()
    assert path == tmp_path / "from_env"
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == pytest.approx(
        compile_cache.DEFAULT_MIN_COMPILE_TIME_SECS
    )
    explicit = compile_cache.enable_compilation_cache(tmp_path / "arg", min_compile_time_secs=2)
    assert explicit == tmp_path / "arg"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "arg")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"directory": 3}, TypeError, "directory must be a path"),
        ({"directory": ""}, ValueError, "directory must not be empty"),
        ({"min_compile_time_secs": "1"}, TypeError, "min_compile_time_secs must be a number"),
        ({"min_compile_time_secs": True}, TypeError, "min_compile_time_secs must be a number"),
        ({"min_compile_time_secs": -1.0}, ValueError, "finite and >= 0"),
        ({"min_compile_time_secs": float("nan")}, ValueError, "finite and >= 0"),
    ],
)
def test_bad_arguments_raise(restore_jax_cache, kwargs, error, match):
    before = jax.config.jax_compilation_cache_dir
    with pytest.raises(error, match=match):
        compile_cache.enable_compilation_cache(**kwargs)
    assert jax.config.jax_compilation_cache_dir == before


def test_a_file_is_not_a_cache_folder(restore_jax_cache, tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        compile_cache.enable_compilation_cache(file)


def test_second_compilation_is_read_from_the_cache(restore_jax_cache, tmp_path, caplog):
    # The default threshold writes even this tiny compilation (a few milliseconds).
    path = compile_cache.enable_compilation_cache(tmp_path / "cache")

    def f(x):
        return jnp.sin(x) * 3.0 + jnp.cumsum(x)

    x = jnp.arange(7.0)
    expected = jax.jit(f)(x)
    written = sorted(pathlib.Path(path).iterdir())
    assert written, "the compiled executable was not written to the cache folder"
    jax.clear_caches()  # forget the in-memory executable: the next call must go to disk
    with caplog.at_level(logging.DEBUG, logger="jax._src.compiler"):
        again = jax.jit(f)(x)
    assert any("Persistent compilation cache hit" in r.getMessage() for r in caplog.records)
    assert jnp.array_equal(again, expected)
