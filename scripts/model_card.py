"""Write ``data/MODEL_CARD.md`` from the training reports of every shipped artefact and a devset evaluation.

    python -m scripts.model_card --training-report data/training_report.json \
        --devset-metrics results/devset/metrics.json [--browser-metrics results/devset_webm/metrics.json]

The CNN-Transformer (``data/cnn_transformer.json``) and fusion (``data/fusion.json``) sections are
added when those artefacts are there.

The figures in the card are copied from those JSON files, never typed by hand. What was tried and
what did not help is the research log, ``data/NOTES.md``: the card links to it rather than copying it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def interval(bounds: list[float] | None, points: bool = False) -> str:
    """A bootstrap interval of metrics.json as " (95 % interval a-b %)", in points with signs for a
    difference, or "" for metrics written before intervals were."""
    if bounds is None:
        return ""
    low, high = (f"{100 * b:+.1f}" for b in bounds) if points else (f"{100 * b:.1f}" for b in bounds)
    return f" (95 % interval {low} to {high})" if points else f" (95 % interval {low}-{high} %)"


def devset_section(title: str, metrics: dict) -> list[str]:
    lines = [f"### {title}", "",
             f"{metrics['scored']} files scored ({metrics['no_speech']} answered No Speech, "
             f"{metrics['errors']} errors).", "",
             "| measure | value |", "| --- | --- |",
             f"| pooled EER | {pct(metrics.get('eer'))}{interval(metrics.get('eer_interval'))} |",
             f"| ROC-AUC | {metrics.get('roc_auc', float('nan')):.3f} |",
             f"| min DCF | {metrics.get('min_dcf', float('nan')):.3f} |",
             f"| ECE | {metrics.get('ece', float('nan')):.3f} |",
             f"| accuracy of the verdicts | {pct(metrics.get('accuracy'))} |"]
    if metrics.get("reals_called_fake"):
        for key, what in (("reals_called_fake", "reals called Fake"), ("fakes_called_real", "fakes called Real")):
            rate = metrics[key]
            lines.append(f"| {what} by the verdicts | {pct(rate['rate'])}{interval(rate['interval'])} |")
    elif metrics.get("confusion_matrix"):
        (true_real, false_fake), (missed, caught) = metrics["confusion_matrix"]
        lines.append(f"| reals called Fake / fakes called Fake by the verdicts | "
                     f"{pct(false_fake / max(true_real + false_fake, 1))} / {pct(caught / max(missed + caught, 1))} |")
    if metrics.get("zones"):
        zones = metrics["zones"]
        lines.append("| zones real / uncertain / fake: reals; fakes | "
                     + "; ".join(f"{z['real']} / {z['uncertain']} / {z['fake']}" for z in zones.values()) + " |")
    intervals = metrics.get("per_source_eer_interval", {})
    for source, eer in metrics.get("per_source_eer", {}).items():
        lines.append(f"| EER, {source} fakes vs all reals | {pct(eer)}{interval(intervals.get(source))} |")
    for member, values in metrics.get("members", {}).items():
        lines.append(f"| EER of the {member} scorer alone (ROC-AUC) | {pct(values['eer'])} ({values['roc_auc']:.3f}) |")
        if "served_minus_member_eer" in values:
            gain = values["served_minus_member_eer"]
            lines.append(f"| served EER minus the {member} scorer's (paired) | {100 * gain['difference']:+.1f} points"
                         f"{interval(gain['interval'], points=True)} |")
    return lines + [""]


def cnn_section(path: Path) -> list[str]:
    meta = json.loads(path.read_text())
    info = meta["metadata"]
    networks = meta.get("networks", 1)
    lines = ["## CNN-Transformer scorer (`data/cnn_transformer.pt`)", "",
             f"- Input: `{json.dumps(meta['features'])}`; model: `{json.dumps(meta['model_config'])}`, "
             f"{meta.get('parameters', 0):,} parameters"
             + (f" in {networks} networks whose window logits are averaged." if networks > 1 else "."),
             f"- Training data: {info['data']['files']} files ({info['data']['fake_files']} fake): "
             f"{json.dumps(info['data'].get('files_per_source_label'))}."]
    if "ensemble_of" in info:
        lines.append(f"- Combined {info.get('trained')} with `{info.get('command')}` from:")
        members = [(f"  - `{m.get('artefact')}`: trained", m) for m in info["ensemble_of"]]
    else:
        members = [("- Trained", info)]
    for prefix, member in members:
        held, dev = member.get("heldout", {}), member.get("devset")
        lines.append(
            f"{prefix} {member.get('trained')} with `{member.get('command')}`; held-out speakers "
            f"({len(info['data'].get('heldout_groups', []))} groups; they pick the epoch): EER {pct(held.get('eer'))}; "
            f"per system {json.dumps({k: round(v, 3) for k, v in held.get('per_system_eer_vs_all_reals', {}).items()})}"
            + (f"; alone on ../shared/devset {pct(dev['pooled_eer'])}." if dev and member is not info else "."))
    if "devset" in info:
        dev = info["devset"]
        lines.append(f"- Alone on ../shared/devset (whole files, windows pooled): EER {pct(dev['pooled_eer'])}; "
                     f"per source {json.dumps({k: round(v, 3) for k, v in dev['per_source_eer'].items()})}.")
    return lines + [""]


def flatness_section(path: Path) -> list[str]:
    import joblib

    bundle = joblib.load(path)
    info, cv = bundle["metadata"], bundle["metadata"].get("cross_validation", {})
    return ["## Flatness scorer (`data/flatness.joblib`)", "",
            f"- Features: `{json.dumps(bundle['features'])}` (soundsentry/flatness.py); StandardScaler + "
            f"class-balanced logistic regression (C={info.get('c')}).",
            f"- Trained {info.get('trained')} with `{info.get('command')}` on {info.get('rows')} rows "
            f"({info.get('fake_rows')} fake) of {info.get('files')} files, each as it is and "
            f"{info.get('augmented_variants')} augmented copy.",
            f"- {cv.get('method')}: EER {pct(cv.get('eer'))}, "
            f"ROC-AUC {cv.get('roc_auc', float('nan')):.3f}; per system "
            f"{json.dumps({k: round(v, 3) for k, v in cv.get('per_system_eer', {}).items()})}.", ""]


def fusion_section(path: Path) -> list[str]:
    fusion = json.loads(path.read_text())
    info = fusion["metadata"]
    lines = ["## Fusion and calibration (`data/fusion.json`)", "",
             "P(fake) = sigmoid("
             + " + ".join(f"{w:.3f}·logit(p_{m})" for m, w in zip(fusion["members"], fusion["weights"], strict=True))
             + f" {fusion['bias']:+.3f}), a class-balanced logistic regression fitted with "
             f"`{info.get('command')}` on {info.get('heldout_segments')} segments of "
             f"{info.get('heldout_files')} files of held-out training speakers "
             f"({', '.join(info.get('conditions', []))}) that neither member trained on.", "",
             "| held-out training speakers | EER | ROC-AUC | ECE |", "| --- | --- | --- | --- |"]
    for name, values in info.get("heldout", {}).items():
        lines.append(f"| {name} | {pct(values['eer'])} | {values['roc_auc']:.3f} | {values['ece']:.3f} |")
    calibration = info.get("calibration", {})
    where = "the fused held-out scores"
    if calibration.get("folds"):
        lines += ["", f"Calibration on {calibration['method']}; held-out EER per family left out: "
                  + ", ".join(f"{f['left_out']} {pct(f['eer'])}" for f in calibration["folds"]) + "."]
        where = "the pooled out-of-family scores"
    elif calibration.get("fake_files"):
        lines += ["", f"Calibration: {calibration['method']} ({calibration['fake_files']} files of "
                  f"{', '.join(calibration['fake_systems'])}; {calibration['segments']} segments): Platt scale "
                  f"{calibration['platt_scale']:.3f}, offset {calibration['platt_offset']:+.3f} (the weights above "
                  f"include them); there the fused score has EER {pct(calibration['eer'])}, ROC-AUC "
                  f"{calibration['roc_auc']:.3f}, ECE {calibration['ece']:.3f} ({pct(calibration.get('fake_share'))} "
                  "of those segments are fake; the calibration assumes balanced classes)."]
        where = "the calibrated scores of held-out reals against those unseen fakes"
    point = info.get("operating_point")
    eer = point["eer_thresholds"] if point else fusion["thresholds"]
    lines += ["", f"Equal-error thresholds ({where}, per duration category): "
              + ", ".join(f"{k} {v:.3f}" for k, v in eer.items()), ""]
    if not point:
        return lines + ["These are the decision thresholds.", ""]
    lines += ["### Operating point", "",
              f"Decision thresholds: {', '.join(f'{k} {v:.3f}' for k, v in fusion['thresholds'].items())}, fitted with "
              f"`{point['command']}`: {point['method']}. Target: at most {pct(point['target_called_fake'])} of the "
              f"real speech of any source called Fake; {point['files']} files of sources no scorer trained on. "
              "Between the equal-error and the decision threshold a verdict is Real with `zone: uncertain`.", "",
              "| real source | trials (file / chunk) | called Fake, fit on all (file / chunk) | "
              "called Fake, fit without its package (file / chunk) |", "| --- | --- | --- | --- |"]
    from soundsentry.training.fit_operating_point import package_of

    for source, rates in point["called_fake"].items():
        trials = point["trials"].get(source, {})
        unseen = point["leave_one_package_out"].get(package_of(source), {}).get("called_fake", {}).get(source, {})
        lines.append(f"| {source} | {trials.get('file', 0)} / {trials.get('chunk', 0)} | "
                     f"{pct(rates.get('file'))} / {pct(rates.get('chunk'))} | "
                     f"{pct(unseen.get('file'))} / {pct(unseen.get('chunk'))} |")
    return lines + ["", "The last column is the honest estimate for a source like none of these: the shipped "
                    "scores are not on one scale across sources, so no threshold fitted on some of them holds "
                    "the target on another.", ""]


def shortcuts_section(path: Path) -> list[str]:
    """What trivial properties of the training files (``scripts.check_shortcuts``) say about their label."""
    found = json.loads(path.read_text())
    worst = sorted(found["eer_per_feature"].items(), key=lambda item: item[1])[:3]
    return ["## Shortcuts in the training data", "",
            f"`python -m scripts.check_shortcuts` on `../shared/corpus` (the reals and ALGAN-VC fakes the "
            f"scorers train on, without the fakes made from it; {found['files']} files, {found['fakes']} fake): "
            f"trivial properties alone ({', '.join(found['features'])}; gradient "
            f"boosting, speaker-disjoint folds) tell fake from real at **{pct(found['eer_all_features'])} EER** "
            "(50 % would mean no shortcut); alone: "
            + ", ".join(f"{name} {pct(eer)}" for name, eer in worst)
            + ". A scorer trained on these files can lean on them; the devset figures below are the check that "
            "matters.", ""]


def rollup_section(path: Path, conversations: Path | None) -> list[str]:
    """The contrast roll-up: its model, its leave-one-family-out figures, and the devset conversations."""
    rollup = json.loads(path.read_text())
    info = rollup["metadata"]
    names = {"verdict_right": "conversation verdicts right", "clones_caught": "clones caught",
             "controls_real": "all-real conversations called Real", "speakers_right": "speakers judged right",
             "clone_ranked_first": "clone has the highest P(fake) of its recording"}

    def cell(r: dict) -> str:  # a rate and its 95 % bootstrap interval over conversations
        return f"{pct(r['rate'])} ({100 * r['interval'][0]:.0f}-{100 * r['interval'][1]:.0f})"

    lofo = info["leave_one_family_out"]
    lines = ["## Who in a conversation is fake: the contrast roll-up (`data/rollup.json`)", "",
             "With two or more counted speakers, P(fake) of a speaker = sigmoid("
             + " + ".join(f"{w:.3f}·{f}" for f, w in zip(rollup["features"], rollup["weights"], strict=True))
             + f" {rollup['bias']:+.3f}); Fake at {rollup['threshold']:.3f}, uncertain from "
             f"{rollup['uncertain_from']:.3f}. {info['how']}. Conversations: {info['conversations']['count']} "
             f"(seed {info['conversations']['seed']}; {info['conversations']['reals']}; "
             f"{info['conversations']['fakes']}).", "",
             "| training-side conversations, each generator family held out | contrast roll-up | each speaker alone |",
             "| --- | --- | --- |"]
    for key, name in names.items():
        lines.append(f"| {name} | {cell(lofo['contrast'][key])} | {cell(lofo['alone'][key])} |")
    if conversations is not None and conversations.is_file():
        results = json.loads(conversations.read_text())
        lines += ["", f"On {results['count']} conversations built from `../shared/devset` (validation only; "
                  "`python -m scripts.evaluate_conversations`; rates with 95 % intervals over conversations; AUC: "
                  "mixed "
                  "against all-real conversations at every threshold):", "",
                  "| mode | roll-up | " + " | ".join(names.values()) + " | DER | AUC |",
                  "| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
        for mode, by_rollup in results["results"].items():
            for name, summary in by_rollup.items():
                if summary is not None:
                    lines.append(f"| {mode} | {name} | " + " | ".join(cell(summary[k]) for k in names)
                                 + f" | {pct(summary['der'])} | {summary['auc']['auc']:.3f} "
                                 f"({summary['auc']['interval'][0]:.3f}-{summary['auc']['interval'][1]:.3f}) |")
    return lines + ["", "The roll-up moves the operating point of multi-speaker recordings back to the stated "
                    "false-alarm target (any-speaker-Fake compounds each speaker's false alarms); it adds no "
                    "ranking signal the scores lack (the AUCs match): who is fake is only as visible as the "
                    "scorers make it.", ""]


PROVENANCE = [
    "## Training data, generators and licences", "",
    "- Reals: `../shared/corpus` — **LibriSpeech** (Panayotov et al., 2015; CC BY 4.0) and the reals of the "
    "**ALGAN-VC** generated-audio samples (SandyPanda-MLDL; MIT).",
    "- Fakes: the corpus's ALGAN-VC / CycleGAN voice-conversion samples (MIT), and fakes made here from the "
    "LibriSpeech reals by code in this repository: Griffin-Lim (torchaudio, BSD-2), WORLD (pyworld, MIT), LPC "
    "re-synthesis, and two small HiFi-GAN- and MelGAN-style vocoders trained here from scratch on those reals "
    "(`soundsentry/training/vocoders.py`); the upper-band splices of `make_band_spoofs`. No third-party voice "
    "or pretrained generator is used.",
    "- Real speech that sets the operating point (no scorer trains on it): Debian `festvox-ru` (the msu_ru_nsh "
    "reader's prompts; BSD-like), `fillets-ng-data-cs` (Czech voice acting of Fish Fillets NG; GPL-2), "
    "`klettres-data` (letters spoken in 19 languages; GPL-2+), listed by `scripts.make_reals`.",
    "- Pretrained networks read, not trained: Silero VAD (MIT) and the Resemblyzer voice encoder (Apache 2.0), "
    "both from their PyPI wheels.",
    "- Each artefact's metadata records the command, data and versions that made it; `configs/*.toml` hold "
    "those commands as recipes (`make train`), and `soundsentry train` copies each recipe beside the artefact "
    "it makes, under `recipes/`.", "",
    "## What was tried", "",
    "Every design decision behind these artefacts, with the figures that chose it and the ones that did not "
    "help, is in the research log [`data/NOTES.md`](NOTES.md) (numbered items; the devset chose between designs, "
    "so the chosen design's devset figures above are somewhat optimistic).", "",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training-report", type=Path, default=Path("data/training_report.json"))
    parser.add_argument("--devset-metrics", type=Path, required=True)
    parser.add_argument("--browser-metrics", type=Path)
    parser.add_argument("--cnn", type=Path, default=Path("data/cnn_transformer.json"))
    parser.add_argument("--fusion", type=Path, default=Path("data/fusion.json"))
    parser.add_argument("--flatness", type=Path, default=Path("data/flatness.joblib"))
    parser.add_argument("--rollup", type=Path, default=Path("data/rollup.json"))
    parser.add_argument("--shortcuts", type=Path, default=Path("results/shortcuts_corpus.json"),
                        help="scripts.check_shortcuts' results on the training corpus")
    parser.add_argument("--conversations", type=Path, default=Path("results/conversations/results.json"),
                        help="scripts.evaluate_conversations' results.json (devset conversations)")
    parser.add_argument("--output", type=Path, default=Path("data/MODEL_CARD.md"))
    args = parser.parse_args(argv)
    report = json.loads(args.training_report.read_text())
    cv = report["cross_validation"]
    data = report["training_data"]
    lines = [
        "# Model card: Sound Sentry detector", "",
        "Three scorers and their fusion. **TKAN**: Resemblyzer voice-encoder activations (3 LSTM layers + "
        "embedding layer), each reduced to its top-k activated neurons, scaled with a StandardScaler and "
        "classified by a small MLP. **CNN-Transformer** on log spectrograms. **Flatness**: spectral flatness "
        "of the 4-8 kHz band, logistic regression. The fusion (`data/fusion.json`) turns the members it "
        "names into one calibrated P(fake) and sets the thresholds; members it gives no weight are not "
        "computed (without it, TKAN scores alone). Which members the shipped fusion uses, and why: the "
        "fusion section below and the research log, `data/NOTES.md`.", "",
        "## TKAN classifier: how it was trained", "",
        f"- TKAN features: `{json.dumps(data.get('feature_spec'))}`; "
        f"extraction recipe: `{json.dumps(data['recipe'])}`.",
        f"- Rows: {data['rows']} "
        f"({data['fake_rows']} fake) from {data['speakers']} speakers.",
        f"- Rows per system: {', '.join(f'{k} {v}' for k, v in sorted(data['rows_per_system'].items()))}.",
        f"- Classifier: `{json.dumps(report['classifier'])}`.",
        f"- Versions: `{json.dumps(report['versions'])}`.",
        "- Data: ../shared/corpus (LibriSpeech CC BY 4.0 reals, ALGAN-VC MIT reals and voice-conversion fakes) "
        "plus fakes re-synthesised from the LibriSpeech reals by Griffin-Lim, WORLD and LPC "
        "(`python -m scripts.make_spoofs`). Every file, real or fake, passed through the same random "
        "augmentation (Opus/WEBM, MP3, AAC at browser bitrates, noise, reverberation, band limits, RawBoost).",
        "",
        "## TKAN in-corpus validation (flatters: same sources, same generator families)", "",
        f"{cv['method']}:", "",
        "| measure | value |", "| --- | --- |",
        f"| EER | {pct(cv['pooled']['eer'])} |",
        f"| ROC-AUC | {cv['pooled']['roc_auc']:.3f} |",
        f"| accuracy at the EER threshold | {pct(cv['pooled']['accuracy'])} |",
        f"| EER per fold | {', '.join(pct(x) for x in cv['per_fold_eer'])} |",
    ]
    for category, values in cv["per_category"].items():
        lines.append(f"| EER, {category} segments | {pct(values.get('eer'))} |")
    for system, eer in cv["per_system_eer"].items():
        lines.append(f"| EER, {system} vs all reals | {pct(eer)} |")
    lines += ["", "TKAN decision thresholds (EER point of the out-of-fold scores per duration category; used "
              "when no fusion is shipped): " + ", ".join(f"{k} {v:.3f}" for k, v in report["thresholds"].items()), ""]
    if args.cnn.is_file():
        lines += cnn_section(args.cnn)
    if args.flatness.is_file():
        lines += flatness_section(args.flatness)
    if args.fusion.is_file():
        lines += fusion_section(args.fusion)
    if args.rollup.is_file():
        lines += rollup_section(args.rollup, args.conversations)
    if args.shortcuts.is_file():
        lines += shortcuts_section(args.shortcuts)
    lines += ["## Generalisation: ../shared/devset (never trained or fitted on)", "",
              "Scored through the served path (`soundsentry evaluate --test-dir ../shared/devset`, "
              "`--browser-chunks` for the extension's condition; `make evaluate`). "
              "Intervals: 95 %, bootstrap over files.", ""]
    lines += devset_section("Whole files", json.loads(args.devset_metrics.read_text()))
    if args.browser_metrics:
        lines += devset_section("Browser condition: 4 s WEBM/Opus 32 kb/s chunks",
                                json.loads(args.browser_metrics.read_text()))
    lines += PROVENANCE
    args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
