"""jaxcal: train image classifiers in JAX/Flax NNX and measure and fix their calibration."""

__version__ = "0.1.0"
