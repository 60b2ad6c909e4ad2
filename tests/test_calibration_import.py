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
    assert set(ours.split(",")) == {
        "jaxcal",
        "jaxcal.calibration",
        "jaxcal.calibration._checks",
        "jaxcal.calibration._ensemble",
        "jaxcal.calibration._histogram",
        "jaxcal.calibration._isotonic",
        "jaxcal.calibration._lbfgs",
        "jaxcal.calibration._scaling",
        "jaxcal.calibration.calibrators",
        "jaxcal.calibration.metrics",
        "jaxcal.calibration.temperature",
    }
