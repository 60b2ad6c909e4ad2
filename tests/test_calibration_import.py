"""jaxcal.calibration imports only jax, optax and numpy: no flax, TensorFlow, matplotlib, torch."""

import subprocess
import sys

FORBIDDEN = ("flax", "tensorflow", "tensorflow_datasets", "matplotlib", "torch", "orbax", "netcal")


def test_import_pulls_in_no_heavy_frameworks():
    code = (
        "import sys, jaxcal.calibration as c\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('jaxcal'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    top_level, ours = result.stdout.strip().splitlines()
    loaded = set(top_level.split(","))
    assert {"jax", "optax", "numpy"} <= loaded
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    ours = set(ours.split(","))
    assert "jaxcal.calibration" in ours
    outside = {m for m in ours if m != "jaxcal" and not m.startswith("jaxcal.calibration")}
    assert not outside, f"jaxcal.calibration pulls in {sorted(outside)}"
