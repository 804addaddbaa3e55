"""The shortcut guard: how well trivial properties of a file predict its label.

    python -m scripts.check_shortcuts --data ../shared/corpus/manifest.csv cache/zoo/manifest.csv \
        [--output results/shortcuts.json]

A training set whose reals and fakes differ in duration, level, bandwidth or silence teaches a detector
those instead of synthesis. Each file is decoded the way the service decodes it (16 kHz mono) and
described by :data:`FEATURES`; a gradient-boosted classifier on them is cross-validated with
speaker-disjoint folds (a voice, or a real speaker with the fakes made from them, stays in one fold).
An EER near 50 % means the set carries no such shortcut; far below, that one exists, and the per-feature
EERs say which. Also reported per fake family (that family's fakes against all reals), since one
band-limited family is enough to teach "narrow band = fake".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from soundsentry.audio import decode_file
from soundsentry.bandwidth import band_edge_hz
from soundsentry.datasets import load_items
from soundsentry.evaluation.metrics import eer

FEATURES = ("duration_s", "rms_dbfs", "peak_dbfs", "rolloff_95_hz", "band_edge_hz", "lead_silence_s",
            "trail_silence_s", "silent_fraction", "noise_floor_dbfs")
FRAME = 400  # 25 ms at 16 kHz


def describe(samples: np.ndarray, rate: int = 16000) -> dict[str, float]:
    """The trivial features of one 16 kHz mono waveform."""
    samples = samples.astype(np.float64)
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].reshape(n, FRAME) if n else samples[None, :]
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = level.max()
    silent = level < loud - 35.0
    voiced = np.flatnonzero(~silent)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1)) ** 2
    power = spectrum[~silent].sum(axis=0) if voiced.size else spectrum.sum(axis=0)
    cumulative = np.cumsum(power) / max(power.sum(), 1e-20)
    freqs = np.fft.rfftfreq(frames.shape[1], 1 / rate)
    frame_s = FRAME / rate
    return {
        "duration_s": len(samples) / rate,
        "rms_dbfs": 10 * np.log10(np.mean(samples**2) + 1e-12),
        "peak_dbfs": 20 * np.log10(np.abs(samples).max() + 1e-9),
        "rolloff_95_hz": float(freqs[np.searchsorted(cumulative, 0.95)]),
        "band_edge_hz": band_edge_hz(samples, rate=rate),
        "lead_silence_s": float(voiced[0] * frame_s) if voiced.size else len(samples) / rate,
        "trail_silence_s": float((n - 1 - voiced[-1]) * frame_s) if voiced.size else len(samples) / rate,
        "silent_fraction": float(silent.mean()),
        "noise_floor_dbfs": float(np.percentile(level, 10)),
    }


def _groups(items) -> np.ndarray:
    names = [item.speaker or f"{item.source}/{item.path.name}" for item in items]
    _, index = np.unique(names, return_inverse=True)
    return index


def cross_validated_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold P(fake) of a gradient-boosted classifier, five speaker-disjoint folds."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    scores = np.zeros(len(y))
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, class_weight="balanced",
                                               min_samples_leaf=max(2, min(20, len(train) // 10)),
                                               random_state=seed).fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return scores


def guard(items, seed: int = 0) -> dict:
    """The shortcut report of a list of :class:`~soundsentry.datasets.AudioItem`."""
    rows = [describe(decode_file(item.path).samples) for item in items]
    x = np.array([[row[name] for name in FEATURES] for row in rows])
    y = np.array([item.label for item in items])
    groups = _groups(items)
    scores = cross_validated_scores(x, y, groups, seed)
    reals = y == 0
    report = {"files": len(items), "fakes": int(y.sum()), "features": list(FEATURES),
              "eer_all_features": eer(y, scores),
              "eer_per_feature": {}, "eer_per_family": {}, "medians": {}}
    for j, name in enumerate(FEATURES):
        single = cross_validated_scores(x[:, [j]], y, groups, seed)
        report["eer_per_feature"][name] = eer(y, single)
    sources = np.array([item.source for item in items])
    for family in sorted(set(sources[y == 1])):  # a fake source: a zoo family, a corpus generator
        chosen = reals | (sources == family)
        report["eer_per_family"][family] = eer(y[chosen], scores[chosen])
    for label, name in ((0, "real"), (1, "fake")):
        report["medians"][name] = {f: float(np.median(x[y == label, j])) for j, f in enumerate(FEATURES)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="manifests or dataset folders")
    parser.add_argument("--output", type=Path, default=Path("results/shortcuts.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = [item for source in args.data for item in load_items(source)]
    report = guard(items, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(f"{report['files']} files ({report['fakes']} fake): trivial features, speaker-disjoint CV "
                     f"EER {100 * report['eer_all_features']:.1f} % (50 % = no shortcut)\n")
    for name, value in report["eer_per_feature"].items():
        sys.stdout.write(f"  {name:18s} alone {100 * value:5.1f} %\n")
    for family, value in report["eer_per_family"].items():
        sys.stdout.write(f"  fakes of {family:28s} vs all reals {100 * value:5.1f} %\n")
    return 0
