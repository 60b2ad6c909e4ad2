"""Interleaved wall-clock timing (warm-up, then A B A B ... repeats, medians) and machine facts."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, NamedTuple


def time_interleaved(
    runs: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    number: int = 1,
    warmup: int = 1,
    settle: int = 0,
) -> dict[str, list[float]]:
    """Times several workloads in turn, so that load on a shared machine hits them alike.

    Every `run()` must do its work and wait for it (`block_until_ready` for JAX, nothing for
    eager torch). Each run is first called `warmup` times untimed; then, `repeats` times, each
    run in turn (A B A B ...) is called `settle` times untimed and then `number` times in a row
    and timed. `settle` > 0 takes out what a run pays for following another (caches, thread
    pools still busy), for comparing single operations rather than workloads as they come.

    Args:
        runs: name -> zero-argument callable doing one unit of work (one step, one epoch, ...).
        repeats: timed rounds (>= 1).
        number: calls per timed sample (>= 1); the sample is their mean.
        warmup: untimed calls of each run before the first round (>= 0).
        settle: untimed calls of each run right before its timed calls, every round (>= 0).

    Returns:
        name -> [repeats] milliseconds per call, in round order.
    """
    if not runs:
        raise ValueError("runs must name at least one workload")
    for name, value, least in (
        ("repeats", repeats, 1),
        ("number", number, 1),
        ("warmup", warmup, 0),
        ("settle", settle, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    for name, run in runs.items():
        if not callable(run):
            raise TypeError(f"runs[{name!r}] must be callable, got {type(run).__name__}")
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            for _ in range(settle):
                run()
            start = time.perf_counter()
            for _ in range(number):
                run()
            samples[name].append((time.perf_counter() - start) * 1e3 / number)
    return samples


def first_call_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds of one call of `fn` (for a fresh jitted function: trace + compile + run)."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB) since it started its program.

    Linux: VmHWM of /proc/self/status. Not `ru_maxrss`, which a child inherits from its
    parent's memory at fork across exec (a fresh process started from a 1.4 GB benchmark
    reports 1.4 GB before doing anything). Elsewhere `ru_maxrss` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def median(samples: list[float]) -> float:
    """The median of `samples`, rounded to 4 decimals (milliseconds)."""
    if not samples:
        raise ValueError("samples must not be empty")
    return round(statistics.median(samples), 4)


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU, Python, JAX backend and library versions of this machine."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": _load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d.device_kind) for d in jax.devices()],
        "versions": {
            name: package_version(name)
            for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch")
        },
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# A run whose hypervisor took this share of the CPU time it wanted or more (other guests ran on
# its cores) gets a warning: its times, and the ratios between them, are not comparable with
# a quiet run's (measured here: 13-54 % steal under load slowed torch's LeNet step 3-40x).
STEAL_WARNING = 0.05


class CpuCounters(NamedTuple):
    """The machine's cumulative CPU time in clock ticks, from the first line of /proc/stat.

    Attributes:
      busy: time running anything (user + nice + system + irq + softirq).
      steal: time the hypervisor ran other guests while this machine's CPUs wanted to run.
    """

    busy: int
    steal: int


def cpu_counters(path: str | os.PathLike = "/proc/stat") -> CpuCounters | None:
    """The machine's CPU counters now, or None where `path` is missing or unreadable."""
    try:
        with open(path) as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:]):
        return None
    # user nice system idle iowait irq softirq steal (kernels before 2.6.11: the first four)
    ticks = [int(f) for f in fields[1:9]] + [0] * (9 - len(fields))
    user, nice, system, _, _, irq, softirq, steal = ticks
    return CpuCounters(busy=user + nice + system + irq + softirq, steal=steal)


def steal_share(start: CpuCounters | None, end: CpuCounters | None) -> float | None:
    """The share of the CPU time the machine wanted from `start` to `end` (busy + steal) that
    the hypervisor gave to other guests, in [0, 1]; None when a reading is missing or the
    machine wanted none. Idle time does not dilute it: a one-thread run on a 2-core machine
    that lost half its time reads 0.5."""
    if start is None or end is None:
        return None
    stolen, busy = end.steal - start.steal, end.busy - start.busy
    if stolen + busy <= 0:
        return None
    return round(stolen / (stolen + busy), 4)


def run_conditions(start: CpuCounters | None, end: CpuCounters | None = None) -> dict[str, Any]:
    """What the machine went through since `start` (a run's `cpu_counters()`), for its report.

    Returns {"load_average_at_end", "cpu_steal_share"}, and warns when the steal share
    reaches STEAL_WARNING: such a run's numbers should not be compared with a quiet one's.
    """
    share = steal_share(start, cpu_counters() if end is None else end)
    if share is not None and share >= STEAL_WARNING:
        warnings.warn(
            f"the hypervisor took {share:.0%} of the CPU time this machine wanted during the run "
            "(steal): "
            "its times and ratios are not comparable with a quiet run's",
            stacklevel=2,
        )
    return {"load_average_at_end": _load_average(), "cpu_steal_share": share}


def steal_note(machine: Mapping[str, Any]) -> str:
    """A report's steal share in words, for its Markdown."""
    share = machine.get("cpu_steal_share")
    if share is None:
        return "CPU steal during the run: not measured"
    return f"CPU steal during the run: {share:.1%}"
