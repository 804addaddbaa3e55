"""Evaluation figures as PNG files: confusion matrix, ROC curve, DET curve and score histograms.

matplotlib is imported inside :func:`write_plots` and drives the Agg canvas directly (no pyplot,
no global backend), so the service never imports it and batch runs need no display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.evaluation.metrics import compute_det_curve, compute_eer

# a group's own curve needs this many fakes: an EER of 3 files moves in steps of 33 points
MIN_GROUP_FAKES = 20
MAX_GROUP_CURVES = 12  # drawn in distinct colours (tab10, then tab20's lighter shades), the overall curve in black
DET_TICKS = (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 0.999)


def write_plots(
    output_dir: Path, labels: np.ndarray, fake_scores: np.ndarray, threshold: float,
    groups: np.ndarray | None = None, decisions: np.ndarray | None = None,
    category_thresholds: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write ``confusion_matrix.png``, ``roc.png``, ``det.png`` and ``score_histogram.png``.

    ``labels`` are 1 for fake, ``fake_scores`` P(fake) or any score where higher means fake.
    The confusion matrix counts ``fake_scores >= threshold``, or ``decisions`` (1 = fake) when
    given, e.g. the detector's verdicts. With ``groups`` (one name per trial, e.g. the generator),
    ROC and DET also draw the fakes of each named group with at least :data:`MIN_GROUP_FAKES` of them
    against all reals (at most :data:`MAX_GROUP_CURVES`, largest first), every legend entry with its
    trial count. The histogram marks ``category_thresholds`` (the model's threshold per duration
    category) when given, else ``threshold``. ROC and DET need both classes and are skipped otherwise.
    Returns the paths written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(fake_scores, dtype=np.float64)
    predicted = (scores >= threshold).astype(int) if decisions is None else np.asarray(decisions).astype(int)
    groups = None if groups is None else np.asarray(groups).astype(str)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(figure: Any, name: str) -> None:
        FigureCanvasAgg(figure)
        figure.tight_layout()
        figure.savefig(output_dir / name, dpi=120)
        written.append(output_dir / name)

    figure = Figure(figsize=(4.5, 4))
    _confusion(figure.add_subplot(), labels, predicted,
               "verdicts" if decisions is not None else f"score ≥ {threshold:.3g}")
    save(figure, "confusion_matrix.png")

    real, fake = scores[labels == 0], scores[labels == 1]
    if real.size and fake.size:
        named, left_out = curve_groups(labels, groups)
        curves = [(f"all: {fake.size} fake, {real.size} real", fake)] + [
            (f"{group} (n={len(values)})", values)
            for group in named for values in [scores[(groups == group) & (labels == 1)]]
        ]
        note = f"{left_out} groups with < {MIN_GROUP_FAKES} fakes not drawn" if left_out else None
        figure = Figure(figsize=(6.5, 5.5))
        _roc(figure.add_subplot(), real, curves, note)
        save(figure, "roc.png")
        figure = Figure(figsize=(6.5, 5.5))
        _det(figure.add_subplot(), real, curves, note)
        save(figure, "det.png")

    figure = Figure(figsize=(6.5, 4))
    _histograms(figure.add_subplot(), real, fake, dict(category_thresholds) if category_thresholds
                else {"threshold": threshold})
    save(figure, "score_histogram.png")
    return written


def curve_groups(labels: np.ndarray, groups: np.ndarray | None) -> tuple[list[str], int]:
    """The largest named groups of fakes with at least :data:`MIN_GROUP_FAKES` each (none when only one
    group is named: it would repeat "all"), and how many named groups were left out."""
    if groups is None:
        return [], 0
    names, counts = np.unique(groups[(labels == 1) & (groups != "")], return_counts=True)
    if names.size < 2:
        return [], 0
    order = np.argsort(-counts, kind="stable")
    kept = [str(names[i]) for i in order if counts[i] >= MIN_GROUP_FAKES][:MAX_GROUP_CURVES]
    return kept, int(names.size - len(kept))


def _colour(index: int) -> Any:
    """Black for the overall curve, then tab10's ten colours, then tab20's lighter shades: no two alike."""
    if index == 0:
        return "black"
    from matplotlib import colormaps

    index -= 1
    return colormaps["tab10"](index) if index < 10 else colormaps["tab20"](2 * (index - 10) % 20 + 1)


def _legend(axes: Any, note: str | None, location: str) -> None:
    if note:
        axes.plot([], [], " ", label=note)  # a legend line with no mark
    axes.legend(fontsize="x-small", loc=location)


def _confusion(axes: Any, labels: np.ndarray, predicted: np.ndarray, how: str) -> None:
    matrix = np.array([[np.sum((labels == t) & (predicted == p)) for p in (0, 1)] for t in (0, 1)])
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for t in (0, 1):
        for p in (0, 1):
            axes.text(p, t, f"{matrix[t, p]}\n{rates[t, p]:.1%}", ha="center", va="center",
                      color="white" if rates[t, p] > 0.5 else "black")
    axes.set_xticks([0, 1], ["Real", "Fake"])
    axes.set_yticks([0, 1], ["Real", "Fake"])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix ({how})")


def _roc(axes: Any, real: np.ndarray, curves: list[tuple[str, np.ndarray]], note: str | None = None) -> None:
    for index, (name, fake) in enumerate(curves):
        miss, false_alarm, _ = compute_det_curve(fake, real)
        order = np.argsort(false_alarm, kind="stable")
        fpr, tpr = np.concatenate([[0.0], false_alarm[order]]), np.concatenate([[0.0], 1 - miss[order]])
        auc = float(np.trapezoid(tpr, fpr))
        axes.plot(fpr, tpr, lw=2.0 if index == 0 else 1.0, color=_colour(index), label=f"{name}: AUC {auc:.3f}")
    axes.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axes.set_xlabel("false-alarm rate (real called fake)")
    axes.set_ylabel("detection rate (fake called fake)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title("ROC (each group's fakes against all reals)")
    _legend(axes, note, "lower right")


def _det(axes: Any, real: np.ndarray, curves: list[tuple[str, np.ndarray]], note: str | None = None) -> None:
    """Miss against false-alarm rate on normal-deviate axes, where Gaussian scores give lines."""
    from scipy.stats import norm

    def deviate(rate: np.ndarray) -> np.ndarray:
        return norm.ppf(np.clip(rate, DET_TICKS[0] / 2, 1 - DET_TICKS[0] / 2))

    for index, (name, fake) in enumerate(curves):
        miss, false_alarm, _ = compute_det_curve(fake, real)
        eer = compute_eer(fake, real)[0]
        axes.plot(deviate(false_alarm), deviate(miss), lw=2.0 if index == 0 else 1.0, color=_colour(index),
                  label=f"{name}: EER {eer:.1%}")
    limits = deviate(np.array([DET_TICKS[0], DET_TICKS[-1]]))
    axes.plot(limits, limits, ls=":", color="grey", lw=1)
    ticks = deviate(np.array(DET_TICKS))
    names = [f"{100 * t:g}" for t in DET_TICKS]
    axes.set_xticks(ticks, names)
    axes.set_yticks(ticks, names)
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    axes.set_xlabel("false-alarm rate (%)")
    axes.set_ylabel("miss rate (%)")
    axes.set_title("DET (each group's fakes against all reals)")
    axes.grid(True, lw=0.3)
    _legend(axes, note, "upper right")


def _histograms(axes: Any, real: np.ndarray, fake: np.ndarray, thresholds: Mapping[str, float]) -> None:
    """Both classes' scores, and a line at each threshold (one per duration category when given)."""
    both = np.concatenate([real, fake])
    low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    bins = np.linspace(min(low, 0.0), max(high, 1.0), 41)
    for values, name, color in ((real, "real", "tab:green"), (fake, "fake", "tab:red")):
        if values.size:
            axes.hist(values, bins=bins, density=True, alpha=0.5, color=color, label=f"{name} ({values.size})")
    for (name, value), style in zip(thresholds.items(), ("--", "-.", ":", (0, (5, 1))), strict=False):
        axes.axvline(value, color="black", ls=style, lw=1, label=f"{name.replace('_', ' ')} threshold {value:.3g}")
    axes.set_xlabel("score (P(fake))")
    axes.set_ylabel("density")
    axes.set_title("Scores per class")
    axes.legend(fontsize="x-small")
