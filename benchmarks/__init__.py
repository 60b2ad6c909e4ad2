"""Timing benchmarks of jaxcal against the original PyTorch notebooks."""
