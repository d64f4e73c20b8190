"""The ``asr`` command: argument parsing for every sub-command, forwarding to the
library. A user's mistake becomes one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("asr")


def _user_errors() -> tuple[type[Exception], ...]:
    from asr.audio import AudioError
    from asr.datamodule import InvalidDataError
    from asr.inference import CheckpointError
    from asr.manifest import ManifestError
    from asr.text import TextError

    return (
        AudioError,
        CheckpointError,
        InvalidDataError,
        ManifestError,
        TextError,
        FileNotFoundError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv and argv[0] == "train":
        return _train(argv[1:])
    parser = argparse.ArgumentParser(
        prog="asr",
        description="DeepSpeech2 speech recognition: train, transcribe, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train",
        help="train a model: asr train --config conf/....yaml [--key value ...]",
        add_help=False,
    )

    p = sub.add_parser("manifest", help="JSON Lines manifest from a LibriSpeech tree")
    p.add_argument("tree", type=Path, help="directory holding SPK/CHAPTER/*.flac")
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("evaluate", help="WER and CER of a model on a manifest")
    p.add_argument("manifest", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--batch-seconds", type=float, default=300.0)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("model-info", help="parameter counts of the model presets")

    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "model-info":
            return _model_info()
    except _user_errors() as err:
        print(f"asr {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 2


def _train(argv: list[str]) -> int:
    from asr.train import run_training

    try:
        run_training(argv)
    except _user_errors() as err:
        print(f"asr train: error: {err}", file=sys.stderr)
        return 1
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from asr.manifest import librispeech_manifest, write_manifest

    utts = librispeech_manifest(args.tree)
    write_manifest(args.output, utts)
    hours = sum(u.duration for u in utts) / 3600
    log.info(
        "%s: %d utterances, %.2f h, from %s", args.output, len(utts), hours, args.tree
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from asr.inference import evaluate_manifest

    start = time.perf_counter()
    result = evaluate_manifest(
        args.manifest, args.checkpoint, args.batch_seconds, args.device
    )
    result["wall_seconds"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.manifest}: {result['utterances']} utterances, "
            f"{result['words']} words: WER {100 * result['wer']:.2f}% "
            f"(S {result['substitutions']}, D {result['deletions']}, "
            f"I {result['insertions']}), CER {100 * result['cer']:.2f}%"
        )
    return 0


def _model_info() -> int:
    from asr.model import PRESETS, DeepSpeech2, ModelConfig, count_parameters

    for name, preset in PRESETS.items():
        model = DeepSpeech2(
            ModelConfig.from_dict({**ModelConfig().to_dict(), **preset})
        )
        print(f"{name:12s} {count_parameters(model):>12,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
