"""Tests for jaxcal.models.weight_files: each format round-trips, every bad file is one line."""

import os
import subprocess
import sys
import traceback
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxcal.models import (
    WeightsUnavailableError,
    load_npz,
    load_safetensors,
    load_state_dict,
    resnet18_from_torchvision,
    save_npz,
)
from jaxcal.models.convert import main as convert_main

STATE = {
    "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b.num_batches_tracked": np.array(3, np.int64),
}


def _one_line_error(error_type, call):
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message, "".join(traceback.format_exception(info.value))


def test_npz_and_safetensors_round_trip(tmp_path):
    save_npz(STATE, tmp_path / "w.npz")
    save_file(STATE, tmp_path / "w.safetensors")
    for loaded in (
        load_npz(tmp_path / "w.npz"),
        load_safetensors(tmp_path / "w.safetensors"),
        load_state_dict(tmp_path / "w.npz"),
        load_state_dict(str(tmp_path / "w.safetensors")),
    ):
        assert loaded.keys() == STATE.keys()
        for key, value in STATE.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


def _bad_npz_files(tmp_path):
    files = {"garbage": os.urandom(2000), "empty": b"", "zip_garbage": b"PK\x03\x04" + bytes(99)}
    for name, content in files.items():
        (tmp_path / f"{name}.npz").write_bytes(content)
    np.save(tmp_path / "single.npy", np.zeros(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{}, 1], dtype=object))
    with zipfile.ZipFile(tmp_path / "not_npy_member.npz", "w") as z:
        z.writestr("x.npy", b"not an array")  # numpy returns such members as raw bytes
    return sorted(tmp_path.glob("*.npz"))


def test_bad_npz_is_one_line_and_never_advises_unpickling(tmp_path):
    paths = _bad_npz_files(tmp_path)
    assert len(paths) == 6
    for path in paths:
        message, shown = _one_line_error(ValueError, lambda p=path: load_npz(p))
        assert "is not an .npz archive of plain arrays" in message and path.name in message
        # numpy's own message for pickled content tells the user to load it unsafely.
        assert "pickle" not in shown and "trust" not in shown, path.name
    np.savez(tmp_path / "nothing.npz")
    assert (
        "holds no arrays"
        in _one_line_error(ValueError, lambda: load_npz(tmp_path / "nothing.npz"))[0]
    )
    assert "does not exist" in _one_line_error(ValueError, lambda: load_npz(tmp_path / "x.npz"))[0]


def test_npz_with_wrong_keys_is_one_line(tmp_path):
    save_npz({"conv.weight": np.zeros((2, 3), np.float32)}, tmp_path / "wrong.npz")
    state = load_npz(tmp_path / "wrong.npz")
    message, _ = _one_line_error(ValueError, lambda: resnet18_from_torchvision(state, 2))
    assert message == (
        "state_dict holds none of torchvision's ResNet18 keys (1 keys, beginning "
        "'conv.weight'; expected e.g. 'conv1.weight')"
    )


def test_bad_safetensors_and_suffixes(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(os.urandom(300))
    message, _ = _one_line_error(ValueError, lambda: load_state_dict(tmp_path / "bad.safetensors"))
    assert "is not a readable .safetensors file" in message
    (tmp_path / "w.h5").write_bytes(b"")
    message, _ = _one_line_error(ValueError, lambda: load_state_dict(tmp_path / "w.h5"))
    assert "must end in one of .npz, .safetensors, .pth, .pt, got '.h5'" in message
    with pytest.raises(TypeError, match="path"):
        load_state_dict(3)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    message, _ = _one_line_error(
        WeightsUnavailableError, lambda: load_state_dict(tmp_path / "w.pth")
    )
    assert "needs torch: pip install 'jaxcal[torch]'" in message
    assert "python -m jaxcal.models.convert" in message


def test_convert_cli_without_torch_is_one_line(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    blocked = (
        "import runpy, sys; sys.modules['torch'] = None; "
        "runpy.run_module('jaxcal.models.convert', run_name='__main__')"
    )
    args = [str(tmp_path / "w.pth"), str(tmp_path / "w.npz")]
    result = subprocess.run(
        [sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "needs torch: pip install 'jaxcal[torch]' torch==2.13.0" in lines[0]
    assert not (tmp_path / "w.npz").exists()


def test_convert_cli_reads_safetensors_and_rejects_garbage(
    tmp_path, torchvision_resnet18_state_dict, capsys
):
    save_file(torchvision_resnet18_state_dict, tmp_path / "r.safetensors")
    assert convert_main([str(tmp_path / "r.safetensors"), str(tmp_path / "r.npz")]) == 0
    assert "ResNet18 with 1000 classes checked" in capsys.readouterr().out
    loaded = load_npz(tmp_path / "r.npz")
    assert loaded.keys() == torchvision_resnet18_state_dict.keys()
    (tmp_path / "g.npz").write_bytes(os.urandom(500))
    with pytest.raises(SystemExit) as info:
        convert_main([str(tmp_path / "g.npz"), str(tmp_path / "o.npz"), "--model", "densenet121"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an .npz archive" in err and "pickle" not in err
