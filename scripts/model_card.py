"""Write ``data/MODEL_CARD.md`` from the training report and a devset evaluation.

    python -m scripts.model_card --training-report data/training_report.json \
        --devset-metrics results/devset/metrics.json [--browser-metrics results/devset_webm/metrics.json]

The figures in the card are copied from those JSON files, never typed by hand. ``--notes FILE``
appends a hand-written section (what was tried, what did not help).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def devset_section(title: str, metrics: dict) -> list[str]:
    lines = [f"### {title}", "",
             f"{metrics['scored']} files scored ({metrics['no_speech']} answered No Speech, {metrics['errors']} errors).", "",
             "| measure | value |", "| --- | --- |",
             f"| pooled EER | {pct(metrics.get('eer'))} |",
             f"| ROC-AUC | {metrics.get('roc_auc', float('nan')):.3f} |",
             f"| min DCF | {metrics.get('min_dcf', float('nan')):.3f} |",
             f"| ECE | {metrics.get('ece', float('nan')):.3f} |",
             f"| accuracy of the verdicts | {pct(metrics.get('accuracy'))} |"]
    for source, eer in metrics.get("per_source_eer", {}).items():
        lines.append(f"| EER, {source} fakes vs all reals | {pct(eer)} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training-report", type=Path, default=Path("data/training_report.json"))
    parser.add_argument("--devset-metrics", type=Path, required=True)
    parser.add_argument("--browser-metrics", type=Path)
    parser.add_argument("--notes", type=Path)
    parser.add_argument("--output", type=Path, default=Path("data/MODEL_CARD.md"))
    args = parser.parse_args(argv)
    report = json.loads(args.training_report.read_text())
    cv = report["cross_validation"]
    data = report["training_data"]
    lines = [
        "# Model card: TKAN classifier (shipped default)", "",
        "Resemblyzer voice-encoder activations (3 LSTM layers + embedding layer), each reduced to its top-k "
        "activated neurons (TKAN), scaled with a StandardScaler and classified by a small MLP.", "",
        "## How it was trained", "",
        f"- TKAN features: `{json.dumps(data.get('feature_spec'))}`; extraction recipe: `{json.dumps(data['recipe'])}`.",
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
        "## In-corpus validation (flatters: same sources, same generator families)", "",
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
    lines += ["", "Decision thresholds (EER point of the out-of-fold scores per duration category): "
              + ", ".join(f"{k} {v:.3f}" for k, v in report["thresholds"].items()), "",
              "## Generalisation: ../shared/devset (never trained or fitted on)", "",
              "Scored through the served path (`python -m scripts.run_test --test-dir ../shared/devset`).", ""]
    lines += devset_section("Whole files", json.loads(args.devset_metrics.read_text()))
    if args.browser_metrics:
        lines += devset_section("Browser condition: 4 s WEBM/Opus 32 kb/s chunks",
                                json.loads(args.browser_metrics.read_text()))
    if args.notes:
        lines += ["## Notes", "", args.notes.read_text().strip(), ""]
    args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
