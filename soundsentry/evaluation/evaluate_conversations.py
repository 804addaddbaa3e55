"""Who in this conversation is fake: the detector on conversations built from ``../shared/devset``.

Each conversation (:mod:`soundsentry.evaluation.conversations`) holds 2-3 devset files of one source as
its speakers, through one shared channel; half hold one of that source's fakes among its reals
(**mixed**), half are all real (**controls**). Every conversation goes through the served path once
per ``--mode`` — ``diarized`` (the service's diarizer, as a user sends it with ``use_diarization=true``)
and ``oracle`` (the exact reference turns: the roll-up alone, without diarization errors) — and is
judged two ways on the same speakers: each speaker **alone** (the roll-up without ``rollup.json``) and
with the **contrast** roll-up the models directory ships (:class:`soundsentry.rollup.ConversationRollup`).

Reported per mode and roll-up: conversation verdicts right, clones caught (the speaker holding most of
the fake's speech called Fake), controls called Real, reference speakers judged right (each with a
95 % bootstrap interval over conversations), the mean DER, and how well the verdict's margin ranks mixed
conversations above controls at every threshold (ROC AUC; for the contrast roll-up, its paired difference
to judging alone, so a gain is a gain of signal and not a move along the curve). The devset is validation only: nothing
here fits anything.

    python -m scripts.evaluate_conversations                         # 200 conversations, both modes
    python -m scripts.evaluate_conversations --count 48 --mode diarized --output-dir results/conversations

With ``--output-dir``: ``results.json``, and the conversations themselves (FLAC, RTTM, ``conversations.csv``)
with ``--write-audio``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from soundsentry.constants import CHECKOUT
from soundsentry.evaluation.conversations import (
    build_conversations,
    conversation_auc,
    devset_pools,
    judge,
    outcome,
    summarise_outcomes,
    write_conversations,
)

log = logging.getLogger(__name__)
MODES = ("diarized", "oracle")


def evaluate(detector, conversations, modes=MODES) -> dict:
    """{mode: {"alone": summary, "contrast": summary | None}} of ``conversations``."""
    results = {}
    for mode in modes:
        judged = [judge(detector, c, mode) for c in conversations]
        alone = [outcome(j) for j in judged]
        results[mode] = {"alone": summarise_outcomes(alone) | {"auc": conversation_auc(alone)}, "contrast": None}
        if detector.rollup is not None:
            contrast = [outcome(j, detector.rollup) for j in judged]
            results[mode]["contrast"] = summarise_outcomes(contrast) | {"auc": conversation_auc(contrast, alone)}
    return results


def format_results(results: dict) -> str:
    lines = [f"{'':<10}{'roll-up':<10}{'verdict right':>22}{'clones caught':>22}{'controls Real':>22}"
             f"{'speakers right':>22}{'clone ranked 1st':>22}{'DER':>7}{'AUC (mixed vs controls)':>26}"
             f"{'minus alone':>22}"]
    for mode, by_rollup in results.items():
        for name, summary in by_rollup.items():
            if summary is None:
                continue
            cells = "".join(f"{_rate(summary[k]):>22}" for k in
                            ("verdict_right", "clones_caught", "controls_real", "speakers_right", "clone_ranked_first"))
            auc = summary["auc"]
            gain = (f"{auc['minus_paired']:+.3f} ({auc['minus_paired_interval'][0]:+.3f}, "
                    f"{auc['minus_paired_interval'][1]:+.3f})" if "minus_paired" in auc else "")
            lines.append(f"{mode:<10}{name:<10}{cells}{summary['der']:>7.1%}"
                         f"{auc['auc']:>12.3f} ({auc['interval'][0]:.3f}-{auc['interval'][1]:.3f}){gain:>22}")
    return "\n".join(lines)


def _rate(r: dict) -> str:
    return f"{r['rate']:.0%} ({r['interval'][0]:.0%}-{r['interval'][1]:.0%})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devset", type=Path, default=CHECKOUT.parent / "shared" / "devset")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, nargs="+", default=list(MODES))
    parser.add_argument("--models-dir", type=Path, default=None, help="the detector's data dir (default data/)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--write-audio", action="store_true", help="also write the conversations (FLAC + RTTM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not (args.devset / "manifest.csv").is_file():
        parser.error(f"no devset at {args.devset} (its manifest.csv is missing): pass --devset")

    import torch

    from soundsentry.detector import Detector, DetectorConfig

    torch.set_num_threads(1)
    config = DetectorConfig(diarization_backend="embedded",
                            **({"data_dir": args.models_dir} if args.models_dir is not None else {}))
    detector = Detector.load(config)
    reals, fakes = devset_pools(args.devset)
    conversations = build_conversations(reals, fakes, args.count, args.seed, prefix="devset")
    results = evaluate(detector, conversations, args.mode)
    sys.stdout.write(format_results(results) + "\n")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        body = {"count": args.count, "seed": args.seed, "results": results,
                "rollup": detector.rollup.to_dict() if detector.rollup is not None else None}
        (args.output_dir / "results.json").write_text(json.dumps(body, indent=2) + "\n")
        if args.write_audio:
            write_conversations(conversations, args.output_dir / "conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
