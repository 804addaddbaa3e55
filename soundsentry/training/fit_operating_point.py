"""The operating point: thresholds at which real speech from sources no scorer trained on is called Fake
at a stated rate (``--target``, 10 % by default). Writes them into ``data/fusion.json``.

The fusion's own thresholds are equal-error points between held-out training reals and ALGAN-VC fakes
(:mod:`soundsentry.training.train_fusion`). Real speech from other sources scores higher than those
reals, so at those thresholds a browser user sees real speech called Fake far more often than the EER
suggests. A user acts on "Fake"; this step fixes how often that is wrong for real speech nobody trained
on: the real sources of :mod:`soundsentry.training.make_reals` (other languages, channels, codecs).

Every file goes through the served path twice (:func:`soundsentry.evaluation.batch.predict_items`):
whole, and as the extension's 4 s WEBM/Opus chunks. A trial is one answer: its duration category
(of the scored speech) and its P(fake). Per category, the threshold is the lowest at which no
(source, condition) group has more than the target called Fake (the worst group, not the average:
real sources differ far more than their sizes say), and never below the calibration's equal-error
threshold; a category with trials from fewer than two sources takes the threshold of all categories
together. Leave-one-package-out refits without each Debian package's sources and reports the rate
realised on them: the honest estimate for a source the fit never saw. The devset plays no part.

The fusion's weights and calibration are untouched (its member artefacts keep their checksums); the
EER thresholds stay in ``metadata.operating_point.eer_thresholds``, and the detector reports the span
between them and the operating thresholds as its ``uncertain`` zone (:mod:`soundsentry.rollup`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsentry.rollup import CATEGORIES
from soundsentry.training.make_reals import SOURCES
from soundsentry.training.make_spoofs import say

log = logging.getLogger(__name__)
MIN_SOURCES = 2  # a category's own threshold needs trials from this many sources
MIN_GROUP_TRIALS = 20  # ... each with this many trials


@dataclass(frozen=True)
class Trial:
    source: str
    condition: str  # "file" | "chunk"
    category: str
    probability: float


def groups_of(trials: Sequence[Trial]) -> dict[tuple[str, str], np.ndarray]:
    """P(fake) of the trials of each (source, condition)."""
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for trial in trials:
        grouped[(trial.source, trial.condition)].append(trial.probability)
    return {key: np.sort(np.asarray(values)) for key, values in sorted(grouped.items())}


def false_alarm_rate(groups: dict[tuple[str, str], np.ndarray], threshold: float) -> float:
    """The share of reals at or above ``threshold`` (called Fake) in the group where it is highest."""
    return float(max(np.mean(values >= threshold) for values in groups.values()))


def lowest_threshold(groups: dict[tuple[str, str], np.ndarray], target: float) -> float:
    """The lowest threshold at which no group has more than ``target`` of its reals called Fake."""
    values = np.unique(np.concatenate(list(groups.values())))
    candidates = np.unique(np.r_[values, np.nextafter(values, np.inf)])  # "Fake" is p >= threshold
    rates = np.array([false_alarm_rate(groups, t) for t in candidates])
    return float(candidates[np.argmax(rates <= target)])  # rates fall with t and reach 0 past the maximum


def fit_thresholds(trials: Sequence[Trial], target: float, floor: dict[str, float] | None = None) -> dict[str, float]:
    """One threshold per duration category (:data:`soundsentry.rollup.CATEGORIES`), none below ``floor``'s."""
    if not trials:
        raise ValueError("no scored real trials to fit an operating point on")
    pooled = lowest_threshold(groups_of(trials), target)
    thresholds = {}
    for category in CATEGORIES:
        groups = {key: values for key, values in groups_of([t for t in trials if t.category == category]).items()
                  if values.size >= MIN_GROUP_TRIALS}
        enough = len({source for source, _ in groups}) >= MIN_SOURCES
        thresholds[category] = lowest_threshold(groups, target) if enough else pooled
        if floor is not None:
            thresholds[category] = max(thresholds[category], floor[category])
    return thresholds


def realised_rates(trials: Sequence[Trial], thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per source and condition: the share of its real trials called Fake at ``thresholds``."""
    called: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        called[trial.source][trial.condition].append(trial.probability >= thresholds[trial.category])
    return {source: {condition: float(np.mean(values)) for condition, values in sorted(by.items())}
            for source, by in sorted(called.items())}


def leave_one_out(trials: Sequence[Trial], target: float, floor: dict[str, float] | None = None,
                  group_of: Callable[[str], str] = lambda source: source) -> dict[str, dict]:
    """For each group of sources (``group_of``: source → group; default each source alone): the
    thresholds fitted without its sources and the rates they realise on them."""
    result = {}
    for group in sorted({group_of(t.source) for t in trials}):
        rest = [t for t in trials if group_of(t.source) != group]
        if not rest:
            continue
        thresholds = fit_thresholds(rest, target, floor)
        result[group] = {"thresholds": thresholds,
                         "called_fake": realised_rates([t for t in trials if group_of(t.source) == group], thresholds)}
    return result


def score_reals(detector, items, chunk_s: float = 4.0) -> list[Trial]:
    """Each item whole and as browser chunks through the served path; "No Speech" answers are left out."""
    from soundsentry.evaluation.batch import BrowserChunks, predict_items

    trials = []
    for condition, chunks in (("file", None), ("chunk", BrowserChunks(chunk_s=chunk_s))):
        for prediction in predict_items(detector, items, chunks=chunks):
            if prediction.status == "ok":
                trials.append(Trial(prediction.item.source, condition, prediction.category, prediction.probability))
    return trials


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reals", type=Path, nargs="+", default=[Path("cache/reals/manifest.csv")],
                        help="manifests of real speech from sources no scorer trained on (scripts.make_reals)")
    parser.add_argument("--output-dir", type=Path, default=Path("data"),
                        help="model directory whose detector scores the reals and whose fusion.json is rewritten")
    parser.add_argument("--target", type=float, default=0.10, help="share of such reals to be called Fake")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from soundsentry.datasets import load_items
    from soundsentry.detector import Detector, DetectorConfig
    from soundsentry.fusion import FUSION_FILE, Fusion
    from soundsentry.training.common import provenance

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not 0.0 < args.target < 1.0:
        say(f"--target must lie between 0 and 1, not {args.target}")
        return 2
    fusion_path = args.output_dir / FUSION_FILE
    if not fusion_path.is_file():
        say(f"{fusion_path} not found: the operating point is set on a fusion (python -m scripts.train_fusion)")
        return 2
    missing = [str(p) for p in args.reals if not p.is_file()]
    if missing:
        say(f"not found: {', '.join(missing)} (python -m scripts.make_reals)")
        return 2
    torch.set_num_threads(args.threads)
    items = [item for path in args.reals for item in load_items(path) if item.label == 0]
    detector = Detector.load(DetectorConfig(data_dir=args.output_dir))
    fusion = detector.fusion  # the one the detector loaded from fusion_path
    previous = fusion.metadata.get("operating_point", {})
    eer_thresholds = previous.get("eer_thresholds", dict(fusion.thresholds))
    trials = score_reals(detector, items)
    thresholds = fit_thresholds(trials, args.target, eer_thresholds)
    realised = realised_rates(trials, thresholds)
    held_out = leave_one_out(trials, args.target, eer_thresholds, package_of)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for trial in trials:
        counts[trial.source][trial.condition] += 1
    operating_point = {
        "command": " ".join(["python -m scripts.fit_operating_point", *(sys.argv[1:] if argv is None else argv)]),
        "fitted": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "target_called_fake": args.target,
        "method": "per duration category, the lowest threshold (not below the EER threshold) at which no "
                  "(source, condition) group has more than the target of its real trials called Fake; whole files "
                  "and 4 s WEBM/Opus 32 kb/s chunks; leave-one-package-out refits without each Debian package",
        "reals": [str(p) for p in args.reals],
        "files": len(items),
        "trials": {source: dict(by) for source, by in sorted(counts.items())},
        "eer_thresholds": eer_thresholds,
        "thresholds": thresholds,
        "called_fake": realised,
        "leave_one_package_out": held_out,
        "provenance": provenance(),
    }
    updated = Fusion(fusion.members, fusion.weights, fusion.bias, thresholds,
                     dict(fusion.metadata) | {"operating_point": operating_point})
    updated.save(fusion_path)
    say(f"{len(trials)} real trials from {len(counts)} sources; thresholds "
          f"{ {k: round(v, 3) for k, v in thresholds.items()} } (EER points "
          f"{ {k: round(v, 3) for k, v in eer_thresholds.items()} }) → {fusion_path}")
    for source, rates in realised.items():
        unseen = held_out.get(package_of(source), {}).get("called_fake", {}).get(source, {})
        say(f"  {source}: called Fake " + ", ".join(
            f"{condition} {rate:.1%} (fit without its package: {unseen.get(condition, float('nan')):.1%})"
            for condition, rate in rates.items()))
    return 0


def package_of(source: str) -> str:
    """The Debian package a real source of :mod:`soundsentry.training.make_reals` comes from."""
    return SOURCES[source].package if source in SOURCES else source
