"""Tests of the experiment pipeline's run ownership: output folders, resume identity, clean
command-line errors, Ctrl-C and process 0 (through `experiments.birdcat`)."""

import contextlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from experiments import birdcat, outdir, pipeline
from jaxcal import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
# One epoch on 96 synthetic images (76 train, 20 val) and 48 test images: a run of seconds.
TINY = ["--data", "synthetic", "--quick", "--max-train", "96", "--max-test", "48"]
TINY += ["--epochs", "1", "--batch-size", "16", "--no-progress"]


def tiny(out, *flags):
    return birdcat.main([*TINY, "--out", str(out), *flags])


def refused(argv, capsys):
    """(exit code, stderr or exit message) of a run that must stop before it starts."""
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(argv)
    code = exit_info.value.code
    return (code, capsys.readouterr().err) if isinstance(code, int) else (1, code)


def python(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, **kwargs)


@pytest.fixture(scope="module")
def resumed_from_nothing(tmp_path_factory):
    """A --resume run into a fresh folder: (out, stderr)."""
    out = tmp_path_factory.mktemp("run") / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        tiny(out, "--resume")
    return out, stderr.getvalue()


def test_resume_without_a_checkpoint_says_so(resumed_from_nothing, capsys):
    out, stderr = resumed_from_nothing
    assert f"no checkpoint in {out / 'checkpoints'}; training from scratch" in stderr
    with pytest.raises(SystemExit):
        birdcat.main(["--help"])
    assert "with no checkpoint there it says so" in " ".join(capsys.readouterr().out.split())


def test_resume_refuses_other_data_or_options_in_one_line(resumed_from_nothing, capsys):
    out, _ = resumed_from_nothing
    for flags, named in (
        (["--max-test", "40"], "data.sizes.test: 48 -> 40"),
        (["--max-test", "40"], "recipe.max_test: 48 -> 40"),
        (["--lr", "0.01"], "learning_rate: 0.001 -> 0.01"),
        (["--model", "lenet5_bn"], "recipe.model: 'lenet5' -> 'lenet5_bn'"),
    ):
        code, message = refused([*TINY, "--out", str(out), "--resume", *flags], capsys)
        assert code == 1 and message.startswith("error: --resume: cannot resume")
        assert named in message and "\n" not in message
    # More epochs are a continuation of the same run, not another run.
    metrics = tiny(out, "--resume", "--epochs", "2")
    assert metrics["training"]["epochs_run"] == 2


def test_an_out_in_use_is_refused_naming_the_process(tmp_path, capsys):
    out = tmp_path / "out"
    holder = python(
        "-c",
        "import pathlib, sys, time; from experiments import outdir; "
        "held = outdir.own(pathlib.Path(sys.argv[1]), overwrite=False, command='test'); "
        "held.__enter__(); "
        "print('ready', flush=True); time.sleep(600)",
        str(out),
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, message = refused([*TINY, "--out", str(out)], capsys)
        assert code == 1 and message == (
            f"error: --out {out} is in use by another run (process {holder.pid})"
        )
        assert (out / outdir.RUNNING).read_text().startswith(f"pid {holder.pid}, started ")
    finally:
        holder.kill()
        holder.wait()
    # The holder died mid-run: its RUNNING marker stays, so its folder is not silently reused.
    code, message = refused([*TINY, "--out", str(out)], capsys)
    assert code == 2 and "--resume" in message and "--overwrite" in message


def test_stale_outputs_are_refused_then_replaced_while_marked_running(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("# an old report\n")
    (out / "metrics.json").write_text("{}\n")
    code, message = refused([*TINY, "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in message and "--resume" in message
    assert (out / "report.md").read_text() == "# an old report\n"

    seen = []
    fit = train.fit

    def watched_fit(*args, **kwargs):
        seen.append(((out / outdir.RUNNING).is_file(), (out / "report.md").exists()))
        return fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", watched_fit)
    metrics = tiny(out, "--overwrite")
    assert seen == [(True, False)]  # running, and no stale report while it runs
    assert not (out / outdir.RUNNING).exists() and not (out / outdir.LOCK).exists()
    assert (out / "report.md").read_text().startswith("# Birds vs cats")
    stored = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in stored.items() if k != "setup"} == metrics
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # atomic: no leftovers


def test_bad_out_and_lr_are_refused_before_any_data_is_loaded(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        (["--out", str(a_file)], f"--out {a_file} is a file"),
        (["--out", str(a_file / "run")], f"cannot write into {a_file}"),
        *((["--lr", value], "--lr") for value in ("nan", "inf", "-inf")),
        (["--resume", "--overwrite"], "exclude each other"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["--out", str(locked / "run")], f"cannot write into {locked}"))
    for argv, named in cases:
        started = time.perf_counter()
        # tfds with an empty data_dir would fail on loading: these must fail before it.
        code, message = refused(["--data-dir", str(tmp_path / "tfds"), *argv], capsys)
        assert code == 2 and named in message, argv
        assert time.perf_counter() - started < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a_file", *(["locked"] if os.geteuid() != 0 else [])]
    )


def test_only_process_0_writes_reports(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(outdir, "writes_outputs", lambda: False)
    metrics = tiny(out)
    assert metrics["test"]["size"] == 48
    assert [p.name for p in out.iterdir()] == ["checkpoints"]  # shared; no report, no figures


@pytest.mark.slow
def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path):
    out = tmp_path / "out"
    argv = ["--data", "synthetic", "--max-train", "2000", "--max-test", "48", "--epochs", "500"]
    # As from a terminal: a shell's background job (CI started with `&`) inherits an ignored
    # SIGINT, and Python then installs no KeyboardInterrupt handler.
    start = "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)"
    start += (
        "; sys.argv[0] = 'birdcat'; runpy.run_module('experiments.birdcat', run_name='__main__')"
    )
    args = [*argv, "--out", str(out), "--no-progress"]
    run = python("-c", start, *args, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "1").is_dir():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted; the last checkpoint is {out / 'checkpoints'}/")
    assert last.endswith("run the same command with --resume to continue")
    assert "Traceback" not in stderr


def test_reports_name_the_micro_batches_fit_ran():
    config = train.TrainConfig(batch_size=256)
    whole = train.History()
    split = train.History(micro_batch_size=128)
    assert pipeline.batch_text(config, whole) == "batch 256"
    assert pipeline.batch_text(config, split) == "batch 256 in micro-batches of 128"
