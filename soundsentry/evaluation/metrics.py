"""Detection metrics, pure NumPy. Scores are P(fake): higher means more likely fake.

``compute_det_curve``/``compute_eer`` follow AASIST's ``evaluation.py`` with the polarity in the
names: ``fake_scores`` are the scores of spoofed trials, ``real_scores`` of bona fide ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def compute_det_curve(fake_scores: np.ndarray, real_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss rate (fake called real) and false-alarm rate (real called fake) at each threshold.

    A trial is called fake when its score >= threshold. Returns (miss, false_alarm, thresholds).
    """
    fake_scores = np.asarray(fake_scores, dtype=np.float64)
    real_scores = np.asarray(real_scores, dtype=np.float64)
    if fake_scores.size == 0 or real_scores.size == 0:
        raise ValueError("need at least one fake and one real score")
    thresholds = np.unique(np.concatenate([fake_scores, real_scores, [np.inf]]))
    fake_sorted, real_sorted = np.sort(fake_scores), np.sort(real_scores)
    miss = np.searchsorted(fake_sorted, thresholds, side="left") / fake_sorted.size
    false_alarm = 1.0 - np.searchsorted(real_sorted, thresholds, side="left") / real_sorted.size
    return miss, false_alarm, thresholds


def compute_eer(fake_scores: np.ndarray, real_scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where miss and false-alarm rates cross."""
    miss, false_alarm, thresholds = compute_det_curve(fake_scores, real_scores)
    index = int(np.argmin(np.abs(miss - false_alarm)))
    return float((miss[index] + false_alarm[index]) / 2), float(thresholds[index])


def eer_from_labels(labels: np.ndarray, fake_scores: np.ndarray) -> tuple[float, float]:
    """EER and its threshold of labelled scores (1 = fake)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(fake_scores)
    return compute_eer(scores[labels], scores[~labels])


def eer(labels: np.ndarray, fake_scores: np.ndarray) -> float:
    """The EER of labelled scores (1 = fake): the one every report, trainer and evaluation quotes."""
    return eer_from_labels(labels, fake_scores)[0]


def _eer_of(fake_scores: np.ndarray, real_scores: np.ndarray) -> float:
    return compute_eer(fake_scores, real_scores)[0]


def per_group(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
              metric: Callable[[np.ndarray, np.ndarray], float] = _eer_of, *, within: bool = False) -> dict[str, float]:
    """``metric(fake_scores, real_scores)`` (default the EER) of each named group's fakes against all reals
    (the devset README's pooling), or with ``within`` against that group's own reals (groups having both)."""
    labels, scores, groups = np.asarray(labels), np.asarray(scores), np.asarray(groups)
    result = {}
    for group in sorted(set(groups[labels == 1]) - {""}):
        fake = (groups == group) & (labels == 1)
        real = (labels == 0) & (groups == group) if within else labels == 0
        if real.any() and fake.any():
            result[str(group)] = float(metric(scores[fake], scores[real]))
    return result


def min_dcf(fake_scores: np.ndarray, real_scores: np.ndarray, p_fake: float = 0.05,
            cost_miss: float = 1.0, cost_false_alarm: float = 10.0) -> float:
    """Minimum normalised detection cost (ASVspoof 2019 style priors by default)."""
    miss, false_alarm, _ = compute_det_curve(fake_scores, real_scores)
    cost = cost_miss * p_fake * miss + cost_false_alarm * (1 - p_fake) * false_alarm
    default = min(cost_miss * p_fake, cost_false_alarm * (1 - p_fake))
    return float(cost.min() / default)


def expected_calibration_error(labels: np.ndarray, fake_probabilities: np.ndarray, bins: int = 10) -> float:
    """Mean |P(fake) − observed fake rate| over equal-width probability bins, weighted by bin size."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.clip(np.asarray(fake_probabilities, dtype=np.float64), 0, 1)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(probabilities[members].mean() - labels[members].mean())
    return float(error)


def binary_report(labels: np.ndarray, fake_scores: np.ndarray, threshold: float) -> dict:
    """EER, ROC-AUC, and the confusion-based metrics at ``threshold`` (label 1 = fake)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(fake_scores, dtype=np.float64)
    predicted = (scores >= threshold).astype(int)
    report: dict = {"n": int(labels.size), "n_fake": int(labels.sum()), "threshold": float(threshold)}
    if 0 < labels.sum() < labels.size:
        eer, eer_threshold = eer_from_labels(labels, scores)
        report.update(eer=eer, eer_threshold=eer_threshold, roc_auc=float(roc_auc_score(labels, scores)),
                      min_dcf=min_dcf(scores[labels == 1], scores[labels == 0]))
    report.update(
        accuracy=float(accuracy_score(labels, predicted)),
        precision=float(precision_score(labels, predicted, zero_division=0)),
        recall=float(recall_score(labels, predicted, zero_division=0)),
        f1=float(f1_score(labels, predicted, zero_division=0)),
        confusion_matrix=confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        ece=expected_calibration_error(labels, scores),
    )
    return report


def bootstrap_rate(hits: np.ndarray, clusters: np.ndarray, *, resamples: int = 1000, level: float = 0.95,
                   seed: int = 0) -> dict:
    """A share of trials (``hits``: booleans) with its percentile interval from a bootstrap over
    ``clusters`` (the chunks of one file are drawn together): ``{"rate", "interval", "trials"}``."""
    hits = np.asarray(hits, dtype=bool)
    clusters = np.asarray(clusters)
    if hits.size == 0:
        return {"rate": float("nan"), "interval": [float("nan"), float("nan")], "trials": 0}
    names, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, weights=hits.astype(float), minlength=names.size)
    counts = np.bincount(index, minlength=names.size)
    draws = np.random.default_rng(seed).integers(0, names.size, size=(resamples, names.size))
    rates = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0
    bounds = [float(np.quantile(rates, tail)), float(np.quantile(rates, 1 - tail))]
    return {"rate": float(hits.mean()), "interval": bounds, "trials": int(hits.size)}


def bootstrap_eer(
    labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray, *, paired: dict[str, np.ndarray] | None = None,
    resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict:
    """How far the EER could move on another test set like this one: a stratified cluster bootstrap.

    Whole clusters (a file: a browser-chunk run scores several chunks of it, which are not independent
    trials) are drawn with replacement, fakes and reals apart, so every resample keeps both classes and
    their counts. Returns the EER with the percentile interval at ``level``, and for each of ``paired``
    (other scores of the same trials, e.g. one scorer alone) the difference EER(scores) − EER(other)
    with its interval over the same resamples: a paired comparison, much tighter than two separate
    intervals. Clusters are taken as independent; files of one generator or one demo page are alike,
    so the true spread is wider than these intervals.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    clusters = np.asarray(clusters)
    others = {name: np.asarray(values, dtype=np.float64) for name, values in (paired or {}).items()}
    strata = [
        [np.flatnonzero((clusters == cluster) & (labels == kind)) for cluster in np.unique(clusters[labels == kind])]
        for kind in (True, False)
    ]
    if not all(strata):
        raise ValueError("need at least one fake and one real cluster")

    def eer(values: np.ndarray, index: np.ndarray) -> float:
        return compute_eer(values[index[labels[index]]], values[index[~labels[index]]])[0]

    rng = np.random.default_rng(seed)
    everything = np.arange(labels.size)
    drawn = np.empty(resamples)
    differences = {name: np.empty(resamples) for name in others}
    for r in range(resamples):
        index = np.concatenate(
            [members[i] for members in strata for i in rng.integers(len(members), size=len(members))]
        )
        drawn[r] = eer(scores, index)
        for name, values in others.items():
            differences[name][r] = drawn[r] - eer(values, index)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    point = eer(scores, everything)
    return {
        "eer": point,
        "interval": np.percentile(drawn, tails).tolist(),
        "level": level,
        "resamples": resamples,
        "clusters": {"fake": len(strata[0]), "real": len(strata[1])},
        "paired": {
            name: {"eer": eer(values, everything), "difference": point - eer(values, everything),
                   "interval": np.percentile(differences[name], tails).tolist()}
            for name, values in others.items()
        },
    }
