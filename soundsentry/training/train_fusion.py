"""Fit the score fusion and its thresholds on held-out training speakers: writes data/fusion.json.

    python -m scripts.train_fusion --data cache/spoofs_band/manifest.csv --tkan-features cache/features/train \\
                                   [--models-dir data] [--members tkan cnn flatness] [--output data]

Steps
-----
1. **held-out items**: the files of ``--data`` whose speaker group the CNN-Transformer held out
   (its artefact lists them: ``metadata.data.heldout_groups``), so the CNN never trained on them.
2. **members without them**: the shipped TKAN classifier's recipe (scaler + MLP, same
   hyper-parameters) fitted on the ``--tkan-features`` rows of every other speaker; the flatness
   scorer's recipe fitted on the other files of ``--data``.
3. **conditions**: each held-out file is scored as the service would see it — the whole file, a
   4 s crop, and that crop as browser WEBM/Opus at 32 kb/s — through the service's own VAD and
   scoring segments; both members score every segment.
4. **fit**: a class-balanced logistic regression on the members' logits (combination and Platt
   calibration in one, :func:`soundsentry.fusion.fit_fusion`); thresholds per duration category
   are the EER points of the fused held-out scores. Held-out EER of each member and of the fusion,
   and the calibration error, go into the metadata.

``--unseen-generators`` (flatness only): held-out speakers alone still share the training
generators, so the fit learns how sure the member is on generators it knows, and is overconfident
on the ones it does not. In this mode the member is refitted once per fake family with that family
left out, and scores the held-out reals and that family's held-out fakes; the calibration and the
thresholds are fitted on those pooled out-of-family scores. (The CNN-Transformer and TKAN would have
to be retrained per family, so they are not supported here.)

``--calibration-fakes`` (any members): the combination weights still come from the held-out
speakers, but the calibration (a Platt scale and offset on the fused logit) and the thresholds are
fitted on the held-out reals against fakes of generators *no member trained on* — the corpus's own
voice-conversion fakes (``../shared/corpus``'s ALGAN-VC family, left out of the upper-band training
manifests), scored in the same three conditions. It is how a detector that includes the
CNN-Transformer gets probabilities that are not sure of themselves on generators it never saw.

``--weights`` chooses how the members are combined:

- ``heldout`` (default): the logistic regression on the held-out speakers above. Those speakers' fakes
  come from the training generators, so the fit trusts the member that knows them best.
- ``equal``: every member's logit divided by its standard deviation over the held-out reals, then
  summed; nothing about the fakes is fitted, so no member is trusted for knowing the training
  generators. The Platt scale and offset (and the thresholds) are then fitted as usual.
- ``calibration-fakes``: the logistic regression on the held-out reals against the
  ``--calibration-fakes`` (weights, scale and bias at once), so the members count by how well they
  separate a generator none of them trained on.

Nothing here reads ../shared/devset: measure the result with ``python -m scripts.run_test``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from soundsentry.audio import SAMPLE_RATE, decode_audio, encode_audio
from soundsentry.constants import CHECKOUT
from soundsentry.datasets import load_items
from soundsentry.evaluation.metrics import binary_report
from soundsentry.fusion import FUSION_FILE, MEMBERS, Fusion, fit_fusion, logit
from soundsentry.hashing import file_sha256
from soundsentry.models.classifier import load_tkan_artifacts
from soundsentry.models.flatness import FLATNESS_FILE, FlatnessScorer, flatness_features
from soundsentry.models.speaker import load_tkan_network
from soundsentry.scorers import REGISTRY, Scorer, load_member
from soundsentry.scorers.cnn import CNN_FILE
from soundsentry.scorers.tkan import TkanScorer
from soundsentry.speech.segments import crop_samples, scoring_segments, single_speaker_annotation
from soundsentry.speech.vad import SileroVad
from soundsentry.training.common import FeatureSet, category_thresholds, make_model, provenance
from soundsentry.training.train_flatness import file_rows, fit_flatness_model

ROOT = CHECKOUT
log = logging.getLogger("train_fusion")
CROP_S = 4.0
WEIGHTINGS = ("heldout", "equal", "calibration-fakes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True,
                        help="the CNN-Transformer's training manifest(s) or folder(s); repeatable")
    parser.add_argument("--tkan-features", type=Path, default=ROOT / "cache" / "features" / "train",
                        help="the rows the shipped TKAN classifier was trained on")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "data",
                        help="the shipped members (cnn_transformer.pt, trained_model.pth, flatness.joblib)")
    parser.add_argument("--members", nargs="+", choices=MEMBERS, default=list(MEMBERS))
    parser.add_argument("--output", type=Path, default=ROOT / "data")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only N held-out files (quick runs)")
    parser.add_argument("--xvector-dir", type=Path, default=None,
                        help="pyannote x-vector checkpoint, when the TKAN artefacts read it (default model/embedding)")
    parser.add_argument("--unseen-generators", action="store_true",
                        help="calibrate on generators the member did not train on (one refit per fake family)")
    parser.add_argument("--calibration-fakes", type=Path, nargs="+", action="extend",
                        help="manifest(s) or folder(s) whose fakes come from generators no member trained on "
                             "(e.g. ../shared/corpus: its ALGAN-VC fakes); Platt and thresholds are fitted on them "
                             "against the held-out reals; repeatable")
    parser.add_argument("--weights", choices=WEIGHTINGS, default="heldout",
                        help="how the members combine: fitted on held-out speakers, equal after scaling each "
                             "logit by its spread over held-out reals, or fitted on the calibration fakes "
                             "(default %(default)s; see the module docstring)")
    args = parser.parse_args(argv)
    args.members = [m for m in MEMBERS if m in args.members]  # one column order everywhere below
    if args.unseen_generators and args.members != ["flatness"]:
        parser.error("--unseen-generators refits the member once per fake family: only --members flatness")
    if args.unseen_generators and args.calibration_fakes:
        parser.error("--unseen-generators and --calibration-fakes are two ways to calibrate: choose one")
    if args.weights == "calibration-fakes" and not args.calibration_fakes:
        parser.error("--weights calibration-fakes needs --calibration-fakes")
    return args


def held_out_tkan_model(features: Path, models_dir: Path, held_groups: set[str], seed: int):
    """The shipped TKAN recipe fitted on every speaker but the held-out ones."""
    data = FeatureSet.load(features)
    keep = ~np.isin(data.groups, sorted(held_groups))
    shipped = load_tkan_artifacts(models_dir)
    if shipped.spec.key != data.spec.key:
        raise SystemExit(f"{features} holds {data.spec.key} features but data/ ships {shipped.spec.key}")
    report = models_dir / "training_report.json"  # the shipped classifier's hyper-parameters
    recipe = json.loads(report.read_text()).get("classifier", {}) if report.is_file() else {}
    params = {k: v for k, v in recipe.items() if k in ("hidden", "dropout", "epochs", "weight_decay")}
    log.info("TKAN without the held-out speakers: %d of %d rows (%s)", keep.sum(), keep.size, params or "defaults")
    return make_model("weights", random_state=seed, **params).fit(data.features[keep], data.labels[keep]), data.spec


def unseen_generator_scores(
    training: tuple[np.ndarray, np.ndarray, np.ndarray], inputs: np.ndarray, labels: np.ndarray,
    systems: np.ndarray, kinds: np.ndarray, durations: np.ndarray, c: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Out-of-family flatness scores of the held-out segments.

    ``training``: (rows, labels, system of each row) of the other speakers; ``inputs``: the held-out
    segments' flatness features. For each fake family, the member is fitted without that family and
    scores the held-out reals and that family's fakes; the folds are stacked (so each real appears
    once per family). Returns (scores as a (segment, 1) matrix, labels, kinds, durations, fold figures).
    """
    rows, row_labels, row_systems = training
    parts, folds = [], []
    for family in sorted(set(systems[labels == 1])):
        model = fit_flatness_model(rows[row_systems != family], row_labels[row_systems != family], c)
        chosen = (labels == 0) | (systems == family)
        scores = model.predict_proba(inputs[chosen])[:, 1]
        parts.append((scores, chosen))
        folds.append({"left_out": str(family), "segments": int(chosen.sum()),
                      "eer": binary_report(labels[chosen], scores, 0.5)["eer"]})
        log.info("left out %-16s held-out EER %.3f", family, folds[-1]["eer"])
    stacked = np.concatenate([scores for scores, _ in parts])[:, None]
    take = lambda values: np.concatenate([values[chosen] for _, chosen in parts])  # noqa: E731
    return stacked, take(labels), take(kinds), take(durations), folds


@dataclass
class ConditionScores:
    """Members' scores of every scoring segment of some files, each file in every :func:`conditions`."""

    matrix: np.ndarray  # (segment, member) P(fake) of the members other than flatness, in MEMBERS order
    flatness_inputs: np.ndarray  # (segment, feature) flatness features, scored by whichever model is fitted
    labels: np.ndarray
    durations: np.ndarray
    kinds: np.ndarray
    systems: np.ndarray

    def with_flatness(self, model: Any | None) -> np.ndarray:
        """The matrix with the flatness column last (when ``model`` is given)."""
        if model is None:
            return self.matrix
        return np.column_stack([self.matrix, model.predict_proba(self.flatness_inputs)[:, 1]])


@dataclass
class MemberScorers:
    """The members as the service runs them: VAD, scoring segments, each scorer's ``score`` on each segment
    (the shipped CNN-Transformer, TKAN refitted without the held-out speakers); flatness is kept as its
    features, scored by whichever flatness model is fitted afterwards."""

    vad: SileroVad
    members: dict[str, Scorer]  # in MEMBERS order
    flatness_features: Any | None

    def score(self, items: list, rng: np.random.Generator, description: str) -> ConditionScores:
        columns: dict[str, list[float]] = {name: [] for name in self.members}
        inputs, labels, durations, kinds, systems = [], [], [], [], []
        for item in tqdm(items, desc=description, unit="file", mininterval=5.0, file=sys.stderr):
            samples = decode_audio(item.path.read_bytes(), filename=item.path.name).samples
            for kind, audio in conditions(samples, rng).items():
                segments = scoring_segments(single_speaker_annotation(self.vad(audio)))
                if not segments:
                    continue
                for name, scorer in self.members.items():
                    columns[name] += scorer.score(audio, segments).tolist()
                if self.flatness_features is not None:
                    inputs += [flatness_features(crop_samples(audio, s.start, s.end), self.flatness_features)
                               for s in segments]
                labels += [item.label] * len(segments)
                durations += [s.duration for s in segments]
                kinds += [kind] * len(segments)
                systems += [item.system] * len(segments)
        ordered = list(columns.values())  # MEMBERS order: tkan, cnn (flatness last)
        return ConditionScores(
            np.column_stack(ordered) if ordered else np.zeros((len(labels), 0)),
            np.stack(inputs) if inputs else np.zeros((len(labels), 0)), np.array(labels), np.array(durations),
            np.array(kinds), np.array(systems))


def fuse(members: list[str], weights: tuple[float, ...], bias: float, matrix: np.ndarray) -> np.ndarray:
    """P(fake) of the fusion with these weights, from the (segment, member) matrix."""
    return Fusion(tuple(members), weights, bias, thresholds={}).combine(
        {m: matrix[:, i] for i, m in enumerate(members)})


def equal_weights(real_scores: np.ndarray) -> tuple[float, ...]:
    """Weights that give each member's logit the same spread over real speech: 1 / its standard deviation.

    ``real_scores``: (segment, member) P(fake) of held-out reals.
    """
    spread = logit(real_scores).std(axis=0)
    if not np.all(spread > 1e-9):
        raise ValueError(f"a member's logits do not vary over the held-out reals (standard deviations {spread})")
    return tuple(float(w) for w in 1.0 / spread)


def platt(members: list[str], weights: tuple[float, ...], bias: float, matrix: np.ndarray, labels: np.ndarray,
          c: float = 1.0) -> tuple[tuple[float, ...], float, float, float]:
    """A Platt scale and offset of the fused logit, fitted on these segments; the weights keep their ratio.

    Returns (weights, bias, scale, offset)."""
    (scale,), offset = fit_fusion(["fused"], fuse(members, weights, bias, matrix)[:, None], labels, c=c)
    return tuple(scale * w for w in weights), scale * bias + offset, scale, offset


def calibrate_on_unseen_fakes(
    members: list[str], weights: tuple[float, ...], bias: float, reals: tuple[np.ndarray, np.ndarray],
    fakes: tuple[np.ndarray, np.ndarray], c: float = 1.0, refit_weights: bool = False,
) -> tuple[tuple[float, ...], float, dict[str, float], dict[str, Any]]:
    """Rescale a fusion fitted on held-out speakers: a Platt scale and offset of its logit, and thresholds,
    fitted on held-out reals against fakes of generators no member trained on.

    ``reals``/``fakes``: ((segment, member) scores, (segment,) durations). The weights keep their ratio,
    unless ``refit_weights``: then the whole fusion (weights and bias) is refitted on those segments.
    Returns (weights, bias, thresholds per duration category, figures for the metadata).
    """
    matrix = np.vstack([reals[0], fakes[0]])
    labels = np.r_[np.zeros(len(reals[0]), dtype=int), np.ones(len(fakes[0]), dtype=int)]
    if refit_weights:
        scale, offset = 1.0, 0.0
        weights, bias = fit_fusion(members, matrix, labels, c=c)
        method = "weights, bias and thresholds from held-out reals against fakes of generators no member trained on"
    else:
        weights, bias, scale, offset = platt(members, weights, bias, matrix, labels, c=c)
        method = ("weights from held-out speakers; Platt scale and offset of the fused logit and thresholds "
                  "from held-out reals against fakes of generators no member trained on")
    calibrated = fuse(members, weights, bias, matrix)
    thresholds = category_thresholds(labels, calibrated, np.r_[reals[1], fakes[1]])
    report = binary_report(labels, calibrated, 0.5)
    log.info("calibration on unseen fakes: %d segments, fused EER %.3f, AUC %.3f, ECE %.3f; Platt scale %.3f, "
             "offset %.3f", labels.size, report["eer"], report["roc_auc"], report["ece"], scale, offset)
    figures = {
        "method": method, "segments": int(labels.size), "fake_share": float(labels.mean()), "platt_scale": scale,
        "platt_offset": offset, "eer": report["eer"], "roc_auc": report["roc_auc"], "ece": report["ece"]}
    return weights, bias, thresholds, figures


def conditions(samples: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The file as the service meets it: whole, a 4 s crop, and the crop as browser WEBM/Opus."""
    step = int(CROP_S * SAMPLE_RATE)
    start = int(rng.integers(0, max(1, samples.size - step)))
    crop = samples[start : start + step]
    browser = decode_audio(encode_audio(crop, "webm", bitrate="32k"), filename="chunk.webm").samples
    return {"whole": samples, "crop4": crop, "browser": browser}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    cnn = load_member("cnn", args.models_dir)
    held_groups = set(cnn.model.metadata.get("data", {}).get("heldout_groups") or [])
    if not held_groups:
        raise SystemExit(f"{args.models_dir / CNN_FILE} does not list the speakers it held out "
                         "(metadata.data.heldout_groups)")
    items = [item for location in args.data for item in load_items(location)]
    held = [item for item in items if (item.speaker or str(item.path)) in held_groups]
    if args.limit:
        held = [held[i] for i in sorted(rng.choice(len(held), min(args.limit, len(held)), replace=False))]
    log.info("%d held-out files (%d fake) of %d speaker groups",
             len(held), sum(i.label for i in held), len(held_groups))
    tkan_model, spec = None, None
    if "tkan" in args.members:
        tkan_model, spec = held_out_tkan_model(args.tkan_features, args.models_dir, held_groups, args.seed)
    flatness_rows, flatness_c, flatness_spec = None, 1.0, None
    if "flatness" in args.members:
        # the shipped scorer's recipe: its features, augmented copies per file and regularisation
        shipped = FlatnessScorer.load(args.models_dir / FLATNESS_FILE)
        recipe = shipped.metadata
        variants, crops = recipe.get("augmented_variants", 1), recipe.get("crops_s", [])
        flatness_c = recipe.get("c", 1.0)
        others = [item for item in items if (item.speaker or str(item.path)) not in held_groups]
        rows, row_labels, owners = file_rows(
            others, shipped.features, augmented_variants=variants, crops_s=crops, seed=args.seed,
            progress=lambda x: tqdm(x, desc="flatness rows", unit="file", mininterval=5.0, file=sys.stderr))
        flatness_rows = (rows, row_labels, np.array([item.system for item in owners]))
        flatness_spec = shipped.features
        log.info("flatness recipe: %d augmented copies per file, crops %s s, C=%g", variants, crops, flatness_c)

    members: dict[str, Scorer] = {}
    if tkan_model is not None:
        network = load_tkan_network(spec.network, xvector_dir=args.xvector_dir)
        members["tkan"] = TkanScorer(network, spec, lambda rows: tkan_model.predict_proba(rows)[:, 1])
    if "cnn" in args.members:
        members["cnn"] = cnn
    scorers = MemberScorers(SileroVad(), members, flatness_spec)
    started = time.perf_counter()
    held_scores = scorers.score(held, rng, "held-out")
    labels_array, kinds_array, durations_array = held_scores.labels, held_scores.kinds, held_scores.durations
    matrix = held_scores.matrix  # flatness last; its column is added below
    flatness_model = None
    if flatness_rows is not None:
        if args.unseen_generators:
            matrix, labels_array, kinds_array, durations_array, folds = unseen_generator_scores(
                flatness_rows, held_scores.flatness_inputs, labels_array, held_scores.systems, kinds_array,
                durations_array, flatness_c)
        else:
            flatness_model = fit_flatness_model(*flatness_rows[:2], c=flatness_c)
            matrix = held_scores.with_flatness(flatness_model)
    if args.weights == "equal":
        weights, bias, _, _ = platt(args.members, equal_weights(matrix[labels_array == 0]), 0.0, matrix, labels_array,
                                    c=args.c)
    else:
        weights, bias = fit_fusion(args.members, matrix, labels_array, c=args.c)
    thresholds = category_thresholds(labels_array, fuse(args.members, weights, bias, matrix), durations_array)
    calibration_figures = None
    if args.calibration_fakes:
        fakes = [item for location in args.calibration_fakes for item in load_items(location) if item.label == 1]
        if args.limit:
            fakes = [fakes[i] for i in sorted(rng.choice(len(fakes), min(args.limit, len(fakes)), replace=False))]
        fake_scores = scorers.score(fakes, rng, "calibration fakes")
        reals = labels_array == 0
        weights, bias, thresholds, calibration_figures = calibrate_on_unseen_fakes(
            args.members, weights, bias, (matrix[reals], durations_array[reals]),
            (fake_scores.with_flatness(flatness_model), fake_scores.durations), c=args.c,
            refit_weights=args.weights == "calibration-fakes")
        calibration_figures |= {"fakes": [str(d) for d in args.calibration_fakes], "fake_files": len(fakes),
                                "fake_systems": sorted({item.system for item in fakes})}
    fused = fuse(args.members, weights, bias, matrix)  # calibrated, for the held-out figures below

    def figures(values: np.ndarray) -> dict[str, float]:
        report = binary_report(labels_array, values, 0.5)
        by_kind = {str(k): binary_report(labels_array[kinds_array == k], values[kinds_array == k], 0.5)["eer"]
                   for k in sorted(set(kinds_array))}
        return {"eer": report["eer"], "roc_auc": report["roc_auc"], "ece": report["ece"], "eer_by_condition": by_kind}

    heldout = {m: figures(matrix[:, i]) for i, m in enumerate(args.members)} | {"fused": figures(fused)}
    for name, values in heldout.items():
        log.info("held-out %-5s EER %.3f  AUC %.3f  ECE %.3f  %s", name, values["eer"], values["roc_auc"],
                 values["ece"], {k: round(v, 3) for k, v in values["eer_by_condition"].items()})
    members_files = [args.models_dir / name for m in args.members for name in REGISTRY[m].files]
    metadata = {
        "command": "python -m scripts.train_fusion " + " ".join(sys.argv[1:] if argv is None else argv),
        "trained": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": [str(d) for d in args.data],
        "heldout_files": len(held), "heldout_segments": int(labels_array.size),
        "heldout_groups": len(held_groups), "weights": args.weights,
        "conditions": ["whole file", f"{CROP_S:.0f} s crop", f"{CROP_S:.0f} s crop as WEBM/Opus 32 kb/s"],
        "calibration": ({"method": "unseen generators: the member refitted without each fake family in turn, "
                                   "scoring held-out reals and that family's held-out fakes", "folds": folds}
                        if args.unseen_generators else calibration_figures
                        or {"method": "held-out speakers, all training generators"}),
        "cnn_kind": cnn.model.features.kind,
        # the run-time members this fusion belongs to (checked when the detector loads)
        "artefacts": {path.name: file_sha256(path) for path in members_files},
        "tkan_features": str(args.tkan_features) if tkan_model is not None else None,
        "heldout": heldout,
        "seconds": round(time.perf_counter() - started, 1),
        **provenance(),
    }
    result = Fusion(tuple(args.members), weights, bias, thresholds, metadata)
    args.output.mkdir(parents=True, exist_ok=True)
    result.save(args.output / FUSION_FILE)
    log.info("weights %s, bias %.3f, thresholds %s → %s", dict(zip(args.members, np.round(weights, 3), strict=True)),
             bias, {k: round(v, 3) for k, v in thresholds.items()}, args.output / FUSION_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
