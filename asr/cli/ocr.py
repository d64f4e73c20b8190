"""``asr ocr``: text recognition in images (:mod:`asr.ocr`); argument parsing and
forwarding only."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["add_ocr_parser", "run_ocr", "run_ocr_train"]

log = logging.getLogger("asr")


def add_ocr_parser(sub: argparse._SubParsersAction) -> None:
    """``asr ocr {generate,train,recognize,evaluate}``."""
    ocr = sub.add_parser(
        "ocr", help="text in images (CRNN + CTC): generate, train, recognize, evaluate"
    )
    cmd = ocr.add_subparsers(dest="ocr_command", required=True)

    p = cmd.add_parser(
        "generate",
        help="CAPTCHAs or rendered text lines, with a manifest, from a seed",
        description="Write COUNT images of KIND into OUT with OUT/manifest.jsonl "
        "(written last). The same (kind, seed, split) gives the same images, "
        "whatever --jobs; different splits draw from disjoint streams.",
    )
    p.add_argument("kind", choices=("captcha", "lines"))
    p.add_argument("out", type=Path, help="directory for the images and manifest")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", help="a name: train, dev, test...")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")

    cmd.add_parser(
        "train",
        help="train a CRNN: asr ocr train --config conf/ocr/captcha.yaml [...]",
        add_help=False,
    )

    p = cmd.add_parser(
        "recognize",
        help="the text of each image, one line per image, in the order given",
        description="Print one line per IMAGE, in the order given: the text read. "
        "An image that cannot be read (not an image, empty, damaged, too large) "
        "is named on stderr and its line on stdout is left empty, so the lines "
        "still match the images; the others are read.",
        epilog="Exit status: 0 all read, 1 some image unreadable (or a user error).",
    )
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")

    p = cmd.add_parser(
        "evaluate",
        help="whole-sequence accuracy and CER on a manifest",
        description="Score a model on an OCR manifest (JSON Lines of "
        '{"image_filepath", "text"}): whole-sequence accuracy and character '
        "error rate with S/D/I counts. An unreadable image is named on stderr and "
        "scored as read as nothing.",
        epilog="Exit status: 0 scored, 1 user error, 3 --strict and an image "
        "unreadable.",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--strict", action="store_true", help="exit 3 if any unreadable")


def run_ocr_train(argv: list[str]) -> int:
    """``asr ocr train ...`` (LightningCLI parses the arguments)."""
    from asr.configs import ConfigError
    from asr.inference import CheckpointError
    from asr.ocr.images import ImageError
    from asr.ocr.train import run_ocr_training

    try:
        run_ocr_training(argv)
    except (ConfigError, CheckpointError, ImageError, FileNotFoundError) as err:
        print(f"asr ocr train: error: {err}", file=sys.stderr)
        return 1
    return 0


def run_ocr(args: argparse.Namespace) -> int:
    from asr.atomic import WriteError
    from asr.inference import CheckpointError
    from asr.ocr.images import ImageError

    try:
        if args.ocr_command == "generate":
            return _generate(args)
        if args.ocr_command == "recognize":
            return _recognize(args)
        if args.ocr_command == "evaluate":
            return _evaluate(args)
    except (CheckpointError, ImageError, WriteError, ValueError) as err:
        print(f"asr ocr {args.ocr_command}: error: {err}", file=sys.stderr)
        return 1
    return 2


def _generate(args: argparse.Namespace) -> int:
    from asr.ocr.images import generate_set

    start = time.perf_counter()
    manifest = generate_set(
        args.out, args.kind, args.count, args.seed, args.split, args.jobs
    )
    seconds = time.perf_counter() - start
    log.info(
        "%s: %d %s images (seed %d, split %s) in %.1f s with %d job%s (%.2f ms each)",
        manifest,
        args.count,
        args.kind,
        args.seed,
        args.split,
        seconds,
        args.jobs,
        "" if args.jobs == 1 else "s",
        1000 * seconds / args.count,
    )
    return 0


def _recognize(args: argparse.Namespace) -> int:
    from asr.ocr.images import ImageError
    from asr.ocr.recognize import load_ocr_model, recognize_images

    model = load_ocr_model(args.checkpoint, args.device)
    bad = 0
    for _, out in recognize_images(args.images, model, args.batch_size):
        if isinstance(out, ImageError):
            bad += 1
            print(f"asr ocr recognize: {out}", file=sys.stderr)
            print("", flush=True)
        else:
            print(out, flush=True)
    return 1 if bad else 0


def _evaluate(args: argparse.Namespace) -> int:
    from asr.ocr.recognize import evaluate_ocr, load_ocr_model

    model = load_ocr_model(args.checkpoint, args.device)
    result = evaluate_ocr(args.manifest, model, args.batch_size)
    for f in result["failed"]:
        print(
            f"asr ocr evaluate: {f['error']}; scored as read as nothing",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        unreadable = (
            f" ({len(result['failed'])} unreadable)" if result["failed"] else ""
        )
        print(
            f"{args.manifest}: {result['images']} images{unreadable}, "
            f"{result['characters']} characters\n"
            f"sequence accuracy {100 * result['sequence_accuracy']:.2f}% "
            f"({result['correct']} of {result['images']}), "
            f"CER {100 * result['cer']:.2f}% (S {result['substitutions']}, "
            f"D {result['deletions']}, I {result['insertions']}), "
            f"{result['seconds']:.1f} s"
        )
    return 3 if args.strict and result["failed"] else 0
