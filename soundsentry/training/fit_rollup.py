"""The recording-aware roll-up: how a speaker's contrast to the others in its recording says "fake".
Writes ``data/rollup.json`` (:class:`soundsentry.rollup.ConversationRollup`).

    python -m scripts.fit_rollup --reals cache/reals/manifest.csv --zoo cache/zoo/manifest.csv \\
                                 [--count 600] [--seed 0] [--target 0.10] [--output data/rollup.json]

Steps
-----
1. **conversations** (:mod:`soundsentry.evaluation.conversations`): ``--count`` training-side
   conversations of 2-3 speakers, half with one fake speaker among real ones, half all real: the real
   speakers of the Debian-shipped sources (``--reals``, ``make reals``) and the voices of the generator
   zoo (``--zoo``, ``make zoo``), through one shared channel each. No shipped scorer trained on either,
   so their scores are what the service gives speech it has not heard.
2. **the served path**: the shipped detector, diarized with its own diarizer, judges every speaker alone
   (cached in ``--cache``, keyed by the fusion's checksum: a new fusion rescores).
3. **fit**: a class-balanced logistic regression of "this speaker is fake" (most of its speech is the
   fake's) on :data:`soundsentry.rollup.CONTRAST_FEATURES` of every counted speaker of a recording with
   two or more; the threshold is the lowest at which no more than ``--target`` of the all-real
   conversations have a speaker called Fake, never below the equal-error point of the speakers, which
   starts the uncertain zone.
4. **leave-one-family-out**: the fit redone without each generator family's conversations (and a
   share of the controls), judged on them: conversations right, clones caught and controls called Real,
   beside the same conversations judged alone. These figures go into the artefact's metadata.

Nothing here reads ``../shared/devset``: its conversations are ``python -m scripts.evaluate_conversations``.
About 6 min on one core for 600 conversations (building them is most of it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soundsentry.evaluation.conversations import (
    CONVERSATION_RECIPE,
    JudgedConversation,
    iter_conversations,
    judge,
    outcome,
    summarise_outcomes,
    training_pools,
)
from soundsentry.rollup import CONTRAST_FEATURES, ConversationRollup, contrast_features
from soundsentry.training.make_spoofs import say

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when JudgedConversation changes
FAKE_SHARE = 0.5  # a speaker is "fake" when more than this share of its speech is the fake's


def training_rows(judged: Sequence[JudgedConversation]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (speaker, 3), is_fake (speaker,), conversation index (speaker,)) of the counted speakers
    of every conversation with two or more."""
    features, labels, groups = [], [], []
    for index, item in enumerate(judged):
        counted = [s for s in item.speakers if s.counted]
        if len(counted) < 2:
            continue
        features.append(contrast_features(np.array([s.probability for s in counted]), item.recording_probability))
        labels.extend(item.fake_share.get(s.speaker, 0.0) > FAKE_SHARE for s in counted)
        groups.extend([index] * len(counted))
    if not features:
        return np.zeros((0, len(CONTRAST_FEATURES))), np.zeros(0, bool), np.zeros(0, int)
    return np.concatenate(features), np.asarray(labels, bool), np.asarray(groups)


def equal_error_point(scores: np.ndarray, labels: np.ndarray) -> float:
    from soundsentry.evaluation.metrics import eer_from_labels

    return eer_from_labels(labels.astype(int), scores)[1]


def fit(judged: Sequence[JudgedConversation], target: float, metadata: dict | None = None) -> ConversationRollup:
    """The roll-up fitted on ``judged`` (see the module's steps 3)."""
    from sklearn.linear_model import LogisticRegression

    x, y, groups = training_rows(judged)
    if y.all() or not y.any():
        raise ValueError("the conversations need both fake and real speakers to fit a roll-up")
    model = LogisticRegression(class_weight="balanced", C=1.0).fit(x, y)
    weights, bias = tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0])
    scores = model.predict_proba(x)[:, 1]
    eer_point = equal_error_point(scores, y)
    # controls: the highest speaker of each all-real conversation; the threshold lets ``target`` of them over
    control_max = np.array([scores[groups == g].max() for g in np.unique(groups) if judged[g].kind == "control"])
    threshold = float(np.quantile(control_max, 1.0 - target, method="higher")) if control_max.size else eer_point
    threshold = min(max(threshold, eer_point) + 1e-6, 1.0 - 1e-6)
    return ConversationRollup(weights, bias, threshold, min(eer_point, threshold), metadata or {})


def leave_one_family_out(judged: Sequence[JudgedConversation], target: float) -> dict:
    """Per fake family: fit without its conversations and a matching share of the controls, judge them.
    Returns the pooled held-out summary beside the same conversations judged alone, and per family."""
    families = sorted({j.fake_source for j in judged if j.kind == "mixed"})
    controls = [i for i, j in enumerate(judged) if j.kind == "control"]
    fold_of = {i: families[k % len(families)] for k, i in enumerate(controls)}  # controls dealt round-robin
    held_out, alone, per_family = [], [], {}
    for family in families:
        test = [i for i, j in enumerate(judged) if (j.kind == "mixed" and j.fake_source == family)
                or fold_of.get(i) == family]
        held = set(test)
        train = [judged[i] for i in range(len(judged)) if i not in held]
        rollup = fit(train, target)
        these = [outcome(judged[i], rollup) for i in test]
        held_out += these
        alone += [outcome(judged[i]) for i in test]
        mixed = [o for o in these if o.kind == "mixed"]
        per_family[family] = {"clones_caught": float(np.mean([bool(o.clone_caught) for o in mixed])),
                              "conversations": len(mixed)}
    return {"contrast": summarise_outcomes(held_out), "alone": summarise_outcomes(alone), "per_family": per_family}


def judged_conversations(
    reals_manifest: Path, zoo_manifest: Path, count: int, seed: int, cache: Path, detector,
) -> list[JudgedConversation]:
    """Steps 1-2, cached under ``cache`` by count, seed and the detector's fusion."""
    fusion = detector.fusion.to_dict() if detector.fusion is not None else {}
    identity = repr((CACHE_VERSION, count, seed, sorted(fusion.items()), CONVERSATION_RECIPE))
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    path = cache / f"judged_{count}_{seed}_{key}.pkl"
    if path.is_file():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    reals, fakes = training_pools(reals_manifest, zoo_manifest)
    judged = []
    for conversation in iter_conversations(reals, fakes, count, seed, prefix="train"):  # one in memory at a time
        judged.append(judge(detector, conversation, "diarized"))
        if len(judged) % 50 == 0:
            log.info("judged %d/%d conversations", len(judged), count)
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(judged, handle)
    return judged


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reals", type=Path, default=Path("cache/reals/manifest.csv"), help="make_reals' manifest")
    parser.add_argument("--zoo", type=Path, default=Path("cache/zoo/manifest.csv"), help="make_zoo's manifest")
    parser.add_argument("--count", type=int, default=600, help="training-side conversations (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.10,
                        help="share of all-real conversations a Fake speaker may be found in (default 0.10)")
    parser.add_argument("--models-dir", type=Path, default=None, help="the detector's data dir (default data/)")
    parser.add_argument("--cache", type=Path, default=Path("cache/conversations"))
    parser.add_argument("--output", type=Path, default=Path("data/rollup.json"))
    args = parser.parse_args(argv)
    if not 0.0 < args.target < 1.0 or args.count < 20:
        parser.error("--target must be between 0 and 1, and --count at least 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    from soundsentry.detector import Detector, DetectorConfig

    torch.set_num_threads(1)
    config = DetectorConfig(diarization_backend="embedded",
                            **({"data_dir": args.models_dir} if args.models_dir is not None else {}))
    detector = Detector.load(config)
    judged = judged_conversations(args.reals, args.zoo, args.count, args.seed, args.cache, detector)
    lofo = leave_one_family_out(judged, args.target)
    _, labels, _ = training_rows(judged)
    metadata = {
        "fitted": dt.date.today().isoformat(),
        "how": "soundsentry.training.fit_rollup: class-balanced logistic regression on the counted speakers of "
               "training-side conversations, diarized by the embedded diarizer; threshold: at most the target "
               "share of all-real conversations with a Fake speaker, never below the speakers' EER point",
        "conversations": {"count": args.count, "seed": args.seed, "speakers": [CONVERSATION_RECIPE.min_speakers,
                          CONVERSATION_RECIPE.max_speakers], "seconds_per_speaker":
                          list(CONVERSATION_RECIPE.seconds_per_speaker),
                          "reals": "make_reals sources (festvox-ru, Fish Fillets cs, KLettres; Debian main)",
                          "fakes": "make_zoo generator families", "speakers_fitted": int(labels.size),
                          "fake_speakers": int(labels.sum())},
        "target_controls_called_fake": args.target,
        "leave_one_family_out": lofo,
        "detector_fusion": {m: w for m, w in zip(detector.fusion.members, detector.fusion.weights, strict=True)}
        if detector.fusion is not None else None,
    }
    rollup = fit(judged, args.target, metadata)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rollup.save(args.output)
    say(format_lofo(lofo))
    weights = {n: round(w, 3) for n, w in zip(CONTRAST_FEATURES, rollup.weights, strict=True)}
    say(f"weights {weights} bias {rollup.bias:.3f} "
          f"threshold {rollup.threshold:.3f} uncertain from {rollup.uncertain_from:.3f} → {args.output}")
    return 0


def format_lofo(lofo: dict) -> str:
    lines = ["leave-one-family-out (held-out conversations)      contrast              alone"]
    for key in ("verdict_right", "clones_caught", "controls_real", "speakers_right", "clone_ranked_first"):
        c, a = lofo["contrast"][key], lofo["alone"][key]
        lines.append(f"  {key:<18} {_rate(c):>34} {_rate(a):>22}")
    lines += [f"  clones caught, {family}: {v['clones_caught']:.0%} of {v['conversations']}"
              for family, v in lofo["per_family"].items()]
    return "\n".join(lines)


def _rate(r: dict) -> str:
    return f"{r['rate']:.1%} ({r['interval'][0]:.1%}-{r['interval'][1]:.1%})"


if __name__ == "__main__":
    sys.exit(main())
