"""float64 reference fits of every calibrator (scipy, scikit-learn, betacal, numpy): predictors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax

Predictor = Callable[[np.ndarray], np.ndarray]
# Tight enough that the reference is the float64 optimum (parity tests); the benchmark also
# times scipy's and scikit-learn's default tolerances (options {} and tol 1e-4).
SCIPY_OPTIONS = {"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10_000}


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


def _multinomial(features: np.ndarray, labels: np.ndarray, lam: float, mu: float, full: bool):
    """float64 (objective, gradient) of mean CE of softmax(F W^T + b) (+ ODIR), W full or diag."""
    n, k = features.shape
    y = _one_hot(labels, k)
    off = 1.0 - np.eye(k)

    def unpack(theta):
        if full:
            return theta[: k * k].reshape(k, k), theta[k * k :]
        return np.diag(theta[:k]), theta[k:]

    def objective(theta):
        w, b = unpack(theta)
        log_p = log_softmax(features @ w.T + b, axis=1)
        value = -np.mean(np.sum(y * log_p, axis=1))
        value += lam / (k * (k - 1)) * np.sum((w * off) ** 2) + mu / k * np.sum(b**2)
        residual = (np.exp(log_p) - y) / n
        grad_w = residual.T @ features + 2 * lam / (k * (k - 1)) * w * off
        grad_b = residual.sum(axis=0) + 2 * mu / k * b
        grad_w = grad_w.ravel() if full else np.diag(grad_w)
        return value, np.concatenate([grad_w, grad_b])

    start = np.concatenate([np.eye(k).ravel() if full else np.ones(k), np.zeros(k)])
    return objective, start, unpack


def _fit_multinomial(features, labels, lam=0.0, mu=0.0, full=True, options=None):
    objective, start, unpack = _multinomial(features, labels, lam, mu, full)
    options = SCIPY_OPTIONS if options is None else options
    result = minimize(objective, start, jac=True, method="L-BFGS-B", options=options)
    return unpack(result.x)


def temperature(logits: np.ndarray, labels: np.ndarray) -> Predictor:
    """T by minimize_scalar over log T (bounded to [1e-2, 1e2], as fit_temperature)."""
    z = np.asarray(logits, np.float64)

    def nll(log_t):
        scaled = z * np.exp(-log_t)
        if z.ndim == 1:
            return -np.mean(log_expit(np.where(labels == 1, scaled, -scaled)))
        return -np.mean(log_softmax(scaled, axis=1)[np.arange(len(z)), labels])

    bounds = (np.log(1e-2), np.log(1e2))
    log_t = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-12}).x
    t = float(np.exp(log_t))
    return lambda x: expit(x / t) if x.ndim == 1 else softmax(x / t, axis=1)


def platt(logits: np.ndarray, labels: np.ndarray) -> Predictor:
    """a, b minimising the mean BCE of sigmoid(a z + b), scipy BFGS in float64."""
    z = np.asarray(logits, np.float64)
    sign = np.where(labels == 1, 1.0, -1.0)

    def objective(theta):
        margin = sign * (theta[0] * z + theta[1])
        value = -np.mean(log_expit(margin))
        weight = -sign * expit(-margin) / len(z)
        return value, np.array([np.sum(weight * z), np.sum(weight)])

    result = minimize(objective, np.array([1.0, 0.0]), jac=True, method="BFGS", tol=1e-12)
    a, b = result.x
    return lambda x: expit(a * np.asarray(x, np.float64) + b)


def vector(logits: np.ndarray, labels: np.ndarray, options: dict | None = None) -> Predictor:
    """softmax(w * z + b), scipy L-BFGS-B float64 optimum (`options`: SCIPY_OPTIONS)."""
    w, b = _fit_multinomial(np.asarray(logits, np.float64), labels, full=False, options=options)
    return lambda x: softmax(np.asarray(x, np.float64) @ w.T + b, axis=1)


def matrix(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-10) -> Predictor:
    """softmax(W z + b): scikit-learn's multinomial LogisticRegression, unpenalised."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, tol=tol, max_iter=10_000)
    model.fit(np.asarray(logits, np.float64), labels)
    return lambda x: model.predict_proba(np.asarray(x, np.float64))


def dirichlet(
    logits: np.ndarray, labels: np.ndarray, lam: float, mu: float, options: dict | None = None
) -> Predictor:
    """softmax(W log softmax(z) + b) + ODIR: scipy L-BFGS-B float64 optimum."""
    features = log_softmax(np.asarray(logits, np.float64), axis=1)
    w, b = _fit_multinomial(features, labels, lam, mu, full=True, options=options)
    return lambda x: softmax(log_softmax(np.asarray(x, np.float64), axis=1) @ w.T + b, axis=1)


def beta(logits: np.ndarray, labels: np.ndarray) -> Predictor:
    """betacal's BetaCalibration(parameters="abm") on p = sigmoid(z)."""
    from betacal import BetaCalibration

    model = BetaCalibration(parameters="abm").fit(expit(np.asarray(logits, np.float64)), labels)
    return lambda x: model.predict(expit(np.asarray(x, np.float64)))


def _bins(confidence, target, num_bins, binning):
    if binning == "uniform":
        edges = np.arange(num_bins + 1) / num_bins
    elif len(confidence):
        edges = np.quantile(confidence, np.linspace(0.0, 1.0, num_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        edges = np.arange(num_bins + 1) / num_bins
    index = np.searchsorted(edges[1:-1], confidence, side="right")
    counts = np.bincount(index, minlength=num_bins)
    hits = np.bincount(index, weights=target, minlength=num_bins)
    midpoints = 0.5 * (edges[:-1] + edges[1:])
    values = np.where(counts > 0, hits / np.maximum(counts, 1), midpoints)
    return edges, values


def histogram(logits, labels, num_bins: int = 15, binning: str = "uniform") -> Predictor:
    """Histogram binning with numpy loops: p(y=1) for [N]; top label per class for [N, K]."""
    z = np.asarray(logits, np.float64)
    if z.ndim == 1:
        edges, values = _bins(expit(z), labels.astype(float), num_bins, binning)
        return lambda x: values[np.searchsorted(edges[1:-1], expit(x), side="right")]
    p = softmax(z, axis=1)
    top, conf = p.argmax(axis=1), p.max(axis=1)
    correct = (top == labels).astype(float)
    tables = [
        _bins(conf[top == c], correct[top == c], num_bins, binning) for c in range(z.shape[1])
    ]

    def predict(x):
        q = softmax(np.asarray(x, np.float64), axis=1)
        out = np.empty_like(q)
        for i, row in enumerate(q):
            c = int(row.argmax())
            edges, values = tables[c]
            h = values[np.searchsorted(edges[1:-1], row[c], side="right")]
            rest = row.sum() - row[c]
            share = row / rest if rest > 0 else np.full_like(row, 1.0 / (len(row) - 1))
            out[i] = (1.0 - h) * share
            out[i, c] = h
        return out

    return predict


def isotonic_on_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> Predictor:
    """scikit-learn IsotonicRegression(out_of_bounds="clip"): [N] p(y=1) or [N, K] one-vs-rest
    renormalised (uniform where every class is 0); the predictor takes probabilities too."""
    from sklearn.isotonic import IsotonicRegression

    if probabilities.ndim == 1:
        model = IsotonicRegression(out_of_bounds="clip").fit(probabilities, labels)
        return model.predict
    models = [
        IsotonicRegression(out_of_bounds="clip").fit(probabilities[:, c], labels == c)
        for c in range(probabilities.shape[1])
    ]

    def predict(q):
        out = np.stack([m.predict(q[:, c]) for c, m in enumerate(models)], axis=1)
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)

    return predict


def isotonic(logits: np.ndarray, labels: np.ndarray) -> Predictor:
    """`isotonic_on_probabilities` on sigmoid(z) or softmax(z) (float64)."""
    z = np.asarray(logits, np.float64)
    to_p = expit if z.ndim == 1 else (lambda x: softmax(x, axis=1))
    predict = isotonic_on_probabilities(to_p(z), labels)
    return lambda x: predict(to_p(np.asarray(x, np.float64)))


def ensemble_temperature(logits: np.ndarray, labels: np.ndarray) -> Predictor:
    """Zhang et al. 2020: T as `temperature`, then simplex weights by SLSQP in float64."""
    z = np.asarray(logits, np.float64)
    k = z.shape[1]
    scaled = temperature(z, labels)

    def components(x):
        return np.stack([scaled(x), softmax(x, axis=1), np.full(x.shape, 1.0 / k)], axis=-1)

    w, _ = mixture_weights(components(z)[np.arange(len(z)), labels])
    return lambda x: components(np.asarray(x, np.float64)) @ w


def mixture_weights(label_probs: np.ndarray) -> tuple[np.ndarray, float]:
    """SLSQP's float64 minimum of -mean log(p_i . w) over the simplex: (w, the minimum)."""
    p = np.asarray(label_probs, np.float64)

    def objective(w):
        mix = p @ w
        return -np.mean(np.log(mix)), -np.mean(p / mix[:, None], axis=0)

    result = minimize(
        objective,
        np.full(3, 1.0 / 3.0),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * 3,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1.0},
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return result.x, float(result.fun)
