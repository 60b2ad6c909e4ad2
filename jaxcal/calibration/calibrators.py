"""Post-hoc calibrators behind one API: `fit_calibrator(method, logits, labels) -> Calibrator`."""

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcal.calibration import _checks, _ensemble, _histogram, _isotonic, _scaling
from jaxcal.calibration.metrics import BINNINGS, _nll
from jaxcal.calibration.temperature import fit_temperature

CALIBRATORS = (
    "temperature",
    "platt",
    "vector",
    "matrix",
    "dirichlet",
    "beta",
    "histogram",
    "isotonic",
    "ensemble_temperature",
)


class TemperatureParams(NamedTuple):
    """Calibrated logits z / temperature (a scalar T > 0)."""

    temperature: jax.Array


class _Fitted(NamedTuple):
    params: Any
    converged: jax.Array
    nll_before: jax.Array
    nll_after: jax.Array


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["params", "converged", "nll_before", "nll_after"],
    meta_fields=["method", "num_classes"],
)
@dataclasses.dataclass(frozen=True)
class Calibrator:
    """A fitted calibrator: a frozen pytree (returned by jit, stacked by vmap, saved by orbax).

    Attributes:
      method: one of CALIBRATORS.
      num_classes: K for [N, K] logits; None for [N] binary logits.
      params: the method's parameters (a NamedTuple of arrays, e.g. AffineParams).
      converged: scalar bool; True iff the optimiser reached its tolerance at a finite
        optimum (always True for histogram and isotonic, which are exact). False when the
        optimum lies at infinite parameters (a class absent from the labels; data that the
        unpenalised map separates) or max_iter ran out; the parameters are then the finite
        point reached, never NaN.
      nll_before: scalar mean NLL of the fit set's uncalibrated logits.
      nll_after: scalar mean NLL of the fit set's calibrated probabilities (clipped at float
        eps for histogram and isotonic, whose probabilities can be 0).
    """

    method: str
    num_classes: int | None
    params: Any
    converged: jax.Array
    nll_before: jax.Array
    nll_after: jax.Array

    def _check(self, logits: jax.typing.ArrayLike) -> jax.Array:
        logits = _checks.as_float_array("logits", logits)
        if self.num_classes is None and logits.ndim != 1:
            raise ValueError(
                f"logits must have shape [N]: this {self.method} calibrator was fit on [N] "
                f"binary logits, got {logits.shape}"
            )
        if self.num_classes is not None and (
            logits.ndim != 2 or logits.shape[1] != self.num_classes
        ):
            raise ValueError(
                f"logits must have shape [N, {self.num_classes}]: this {self.method} calibrator "
                f"was fit on {self.num_classes} classes, got {logits.shape}"
            )
        _checks.check_finite("logits", logits)
        return logits

    def probabilities(self, logits: jax.typing.ArrayLike) -> jax.Array:
        """Calibrated probabilities: [N] p(y=1) for [N] logits, [N, K] rows summing to 1."""
        return _probabilities(self.method, self.params, self._check(logits))

    def logits(self, logits: jax.typing.ArrayLike) -> jax.Array:
        """Calibrated logits ([N] or [N, K]); ValueError for the methods whose probabilities
        can be 0 or 1 (histogram, isotonic) or are a mixture (ensemble_temperature)."""
        if _METHODS[self.method].logits is None:
            with_logits = [m for m in CALIBRATORS if _METHODS[m].logits is not None]
            raise ValueError(
                f"{self.method} calibrators have no finite calibrated logits; use "
                f".probabilities, or one of {with_logits}"
            )
        return _logits(self.method, self.params, self._check(logits))


@partial(jax.jit, static_argnums=0)
def _logits(method, params, logits):
    return _METHODS[method].logits(params, logits)


@partial(jax.jit, static_argnums=0)
def _probabilities(method, params, logits):
    spec = _METHODS[method]
    if spec.logits is None:
        return spec.probabilities(params, logits)
    calibrated = spec.logits(params, logits)
    if calibrated.ndim == 1:
        return jax.nn.sigmoid(calibrated)
    return jax.nn.softmax(calibrated, axis=-1)


def _temperature_logits(params: TemperatureParams, logits: jax.Array) -> jax.Array:
    return logits / params.temperature


def _fit_temperature(logits, labels, max_iter, tol, bounds):
    fit = fit_temperature(logits, labels, max_iter=max_iter, tol=tol, bounds=bounds)
    return _Fitted(TemperatureParams(fit.temperature), fit.converged, fit.nll_before, fit.nll_after)


def _fit_matrix(features):
    def fit(logits, labels, max_iter, tol, lam, mu):
        lam, mu = (jnp.asarray(x, logits.dtype) for x in (lam, mu))
        return _scaling.fit_matrix(logits, labels, max_iter, tol, lam, mu, features)

    return fit


@partial(jax.jit, static_argnames=("fit", "probabilities", "num_bins", "binning"))
def _fit_exact(logits, labels, fit, probabilities, **options):
    params = fit(logits, labels, **options)
    calibrated = probabilities(params, logits)
    return _Fitted(
        params, jnp.ones((), bool), _nll(logits, labels, True), _nll(calibrated, labels, False)
    )


def _fit_histogram(logits, labels, num_bins, binning):
    return _fit_exact(
        logits,
        labels,
        _histogram.fit_histogram,
        _histogram.histogram_probabilities,
        num_bins=num_bins,
        binning=binning,
    )


def _fit_isotonic(logits, labels):
    return _fit_exact(logits, labels, _isotonic.fit_isotonic, _isotonic.isotonic_probabilities)


class _Method(NamedTuple):
    inputs: tuple[str, ...]  # "binary" ([N] logits) and/or "multiclass" ([N, K])
    defaults: dict[str, Any]
    fit: Callable[..., Any]
    logits: Callable[[Any, jax.Array], jax.Array] | None
    probabilities: Callable[[Any, jax.Array], jax.Array] | None = None


_SCALING_OPTIONS = {"max_iter": 500, "tol": 1e-6}
_ODIR_OPTIONS = {"lam": 0.0, "mu": 0.0}

_METHODS = {
    "temperature": _Method(
        ("binary", "multiclass"),
        {"max_iter": 100, "tol": 1e-6, "bounds": (1e-2, 1e2)},
        _fit_temperature,
        _temperature_logits,
    ),
    "platt": _Method(("binary",), _SCALING_OPTIONS, _scaling.fit_platt, _scaling.platt_logits),
    "vector": _Method(
        ("multiclass",), _SCALING_OPTIONS, _scaling.fit_vector, _scaling.vector_logits
    ),
    "matrix": _Method(
        ("multiclass",),
        {**_SCALING_OPTIONS, **_ODIR_OPTIONS},
        _fit_matrix("logits"),
        _scaling.matrix_logits,
    ),
    "dirichlet": _Method(
        ("multiclass",),
        {**_SCALING_OPTIONS, "lam": 1e-3, "mu": 1e-3},
        _fit_matrix("log_softmax"),
        _scaling.dirichlet_logits,
    ),
    "beta": _Method(("binary",), _SCALING_OPTIONS, _scaling.fit_beta, _scaling.beta_logits),
    "histogram": _Method(
        ("binary", "multiclass"),
        {"num_bins": 15, "binning": "uniform"},
        _fit_histogram,
        None,
        _histogram.histogram_probabilities,
    ),
    "isotonic": _Method(
        ("binary", "multiclass"), {}, _fit_isotonic, None, _isotonic.isotonic_probabilities
    ),
    "ensemble_temperature": _Method(
        ("multiclass",),
        {"max_iter": 500, "tol": 1e-6},
        _ensemble.fit_ensemble_temperature,
        None,
        _ensemble.ensemble_probabilities,
    ),
}


def applicable_methods(logits_ndim: int) -> tuple[str, ...]:
    """The methods of CALIBRATORS that apply to [N] (ndim 1) or [N, K] (ndim 2) logits."""
    kind = "binary" if logits_ndim == 1 else "multiclass"
    return tuple(m for m in CALIBRATORS if kind in _METHODS[m].inputs)


def _check_float(name: str, value: Any, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0.0 <= value < float("inf")) or (positive and value == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite float {bound}, got {value!r}")
    return float(value)


def _check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults updated by `options`, each checked; TypeError for unknown names."""
    defaults = _METHODS[method].defaults
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(
            f"fit_calibrator({method!r}) got unknown options {unknown}; it accepts "
            f"{sorted(defaults) or 'none'}"
        )
    merged = {**defaults, **options}
    for name, value in merged.items():
        if name in ("max_iter", "num_bins"):
            merged[name] = _checks.check_positive_int(name, value)
        elif name in ("tol", "lam", "mu"):
            merged[name] = _check_float(name, value, positive=name == "tol")
        elif name == "binning":
            _checks.check_option("binning", value, BINNINGS)
    return merged


def fit_calibrator(
    method: str, logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, **options: Any
) -> Calibrator:
    """Fits a post-hoc calibrator on held-out logits and labels, in one jitted call.

    Works under `jax.vmap` over a leading axis of `logits` and `labels` (one calibrator per
    seed or ensemble member in one call; the result's arrays gain that axis).

    Methods ([N]: binary logits; [N, K]: multiclass logits) and their options:
      - "temperature" ([N], [N, K]): z / T by NLL (fit_temperature); max_iter=100, tol=1e-6,
        bounds=(1e-2, 1e2).
      - "platt" ([N]): sigmoid(a z + b) by NLL; max_iter=500, tol=1e-6 (largest gradient
        entry, as for every L-BFGS method).
      - "vector" ([N, K]): softmax(w * z + b); max_iter, tol.
      - "matrix" ([N, K]): softmax(W z + b); max_iter, tol, lam=0, mu=0 (ODIR penalty).
      - "dirichlet" ([N, K]): softmax(W log softmax(z) + b) with the ODIR penalty
        lam / (K (K - 1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2 (Kull et al. 2019);
        max_iter, tol, lam=1e-3, mu=1e-3.
      - "beta" ([N]): logit q = a log p - b log(1 - p) + c, p = sigmoid(z), with a, b >= 0 as
        betacal's "abm" (a negative a or b is refit at 0); max_iter, tol.
      - "histogram" ([N], [N, K]): p(y=1) binned (binary) or the top-label confidence binned
        per predicted class (Gupta & Ramdas 2021); num_bins=15, binning="uniform" or
        "quantile" (equal-mass).
      - "isotonic" ([N], [N, K]): pool-adjacent-violators on p(y=1), linear between the
        fit points and clipped outside (scikit-learn's IsotonicRegression(out_of_bounds=
        "clip")); [N, K]: one-vs-rest on softmax(z), renormalised.
      - "ensemble_temperature" ([N, K]): w1 softmax(z / T) + w2 softmax(z) + w3 / K (Zhang et
        al. 2020), T by NLL, then w on the simplex by NLL (damped Newton on each face of
        the simplex, so weights can be exactly 0); max_iter=500 Newton steps per face,
        tol=1e-6 on the optimality (KKT) gaps of w.

    Args:
      method: one of CALIBRATORS.
      logits: [N] binary or [N, K] multiclass logits of a held-out fit set.
      labels: [N] int labels.
      **options: the method's options above.

    Returns:
      A Calibrator; `.probabilities(logits)` and (scaling methods) `.logits(logits)` apply it.

    Raises:
      ValueError: an unknown method, a method that does not apply to this input (the message
        names those that do), bad option values, or bad logits/labels as in `ece`.
      TypeError: unknown options or non-numeric ones.
    """
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {list(CALIBRATORS)}, got {method!r}")
    logits, labels = _checks.check_scores_labels(logits, labels, from_logits=True, name="logits")
    if method not in applicable_methods(logits.ndim):
        shape = "[N] binary" if logits.ndim == 1 else f"[N, {logits.shape[1]}] multiclass"
        raise ValueError(
            f"method {method!r} does not apply to {shape} logits (shape {logits.shape}); use "
            f"one of {list(applicable_methods(logits.ndim))}"
        )
    options = _check_options(method, options)
    fitted = _METHODS[method].fit(logits, labels, **options)
    return Calibrator(
        method=method,
        num_classes=None if logits.ndim == 1 else logits.shape[1],
        params=fitted.params,
        converged=fitted.converged,
        nll_before=fitted.nll_before,
        nll_after=fitted.nll_after,
    )
