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

from asr.cli.data import add_data_parser, run_data
from asr.cli.ocr import add_ocr_parser, run_ocr, run_ocr_train
from asr.cli.serve import add_serve_parser, run_serve
from asr.cli.stream import add_stream_parser, run_stream
from asr.cli.transcribe import (
    add_gate_options,
    add_transcribe_parser,
    run_transcribe,
    silence_db,
)

__all__ = ["entry", "main"]

log = logging.getLogger("asr")


def _user_errors() -> tuple[type[Exception], ...]:
    from asr.atomic import WriteError
    from asr.audio import AudioError
    from asr.datamodule import InvalidDataError
    from asr.decoding import DecoderError
    from asr.export import ExportError
    from asr.inference import CheckpointError
    from asr.lm import LMError
    from asr.manifest import ManifestError
    from asr.text import TextError
    from asr.tune import TuneError

    return (
        AudioError,
        CheckpointError,
        DecoderError,
        ExportError,
        InvalidDataError,
        LMError,
        ManifestError,
        TextError,
        TuneError,
        WriteError,
        FileNotFoundError,
    )


def entry() -> None:
    """The ``asr`` command (and ``python -m asr``): :func:`main` on tcmalloc when it
    is installed (asr.malloc: glibc's malloc grows and slows training). ``asr data``
    stays on glibc's: the synthetic corpus starts an engine process per sentence or
    batch, each of which would load tcmalloc too (synthesis 7 % slower, measured)."""
    from asr.malloc import use_tcmalloc

    if sys.argv[1:2] != ["data"]:
        use_tcmalloc()
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback
        print("asr: interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv and argv[0] == "train":
        return _train(argv[1:])
    if argv[:2] == ["ocr", "train"]:
        return run_ocr_train(argv[2:])
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
    add_data_parser(sub)
    add_ocr_parser(sub)

    p = sub.add_parser(
        "manifest",
        help="JSON Lines manifest from a corpus (LibriSpeech, LJSpeech, Common "
        "Voice, Kaldi, a folder of audio + .txt)",
        description="Read a corpus in a known layout (detected, or --layout), check "
        "every utterance as `asr validate` does, and write the usable ones. "
        "Exit status: 0 all usable, 1 some left out (each named) or a bad source.",
    )
    p.add_argument(
        "source",
        type=Path,
        help="a LibriSpeech tree, a folder of audio files with same-named .txt, an "
        "LJSpeech directory or metadata.csv, a Common Voice .tsv, a Kaldi data dir",
    )
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument(
        "--layout",
        choices=("librispeech", "folder", "ljspeech", "commonvoice", "kaldi"),
        help="the source's layout (default: detected)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="check against this model's vocabulary and frame rate",
    )
    p.add_argument(
        "--max-examples", type=int, default=5, help="problems listed per category"
    )

    p = sub.add_parser(
        "validate",
        help="every problem of a manifest, with line numbers",
        description="Check a JSON Lines manifest in one pass and list every problem "
        "with its line: malformed lines (invalid JSON, not UTF-8, missing keys, "
        "wrong types), audio that is missing or unreadable, empty text, characters "
        "outside the vocabulary, duplicate ids, audio too short for its transcript "
        "(with --checkpoint or --frames-per-second) or too long (--max-duration). "
        "Exit status: 0 no problem, 1 problems (or the manifest cannot be read).",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="check against this model's vocabulary and "
        "frame rate (output frames for each utterance's duration)",
    )
    p.add_argument(
        "--frames-per-second",
        type=float,
        help="model output frames per second of audio, without a checkpoint "
        "(e.g. 50 for 10 ms features and a time stride of 2)",
    )
    p.add_argument("--max-duration", type=float, help="longest usable utterance (s)")
    p.add_argument("--no-audio", action="store_true", help="skip the audio headers")
    p.add_argument(
        "--max-examples", type=int, help="problems listed per category (default: all)"
    )

    add_transcribe_parser(sub)
    add_stream_parser(sub)

    p = sub.add_parser(
        "evaluate",
        help="WER and CER of a model on a manifest",
        description="WER/CER with S/D/I counts, a bootstrap 95% CI and the "
        "real-time factor; a per-utterance report of aligned errors is written "
        "(default: <checkpoint dir>/<manifest stem>.<decoder>.report.txt; a file "
        "there that is not a report on this manifest is kept, and the new report "
        "numbered .2, .3, ...).",
        epilog="Unreadable audio is named on stderr, listed under 'failed' and "
        "scored as all deletions; the exit status stays 0 unless --strict. "
        "Exit status: 0 scored, 1 user error, 3 --strict and some audio unreadable.",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--lm", type=Path, help="KenLM model for beam search")
    p.add_argument("--alpha", type=float, help="LM weight (beam search)")
    p.add_argument("--beta", type=float, help="word insertion bonus (beam search)")
    p.add_argument("--beam-width", type=int, help="beam width (beam search)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--report", type=Path, help="where to write the report")
    p.add_argument("--no-report", action="store_true", help="write no report")
    p.add_argument(
        "--order",
        choices=("worst", "manifest"),
        default="worst",
        help="utterance order in the report (default: worst WER first)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="CI resamples")
    p.add_argument(
        "--strict", action="store_true", help="exit 3 if any audio is unreadable"
    )
    p.add_argument("--batch-seconds", type=float, default=300.0)
    add_gate_options(p)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser(
        "plot-alignment",
        help="features, character posteriors and word spans of one file, as an image",
    )
    p.add_argument("audio", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="e.g. a.png")
    p.add_argument("--device", default="cpu")

    _add_lm_parser(sub)
    add_serve_parser(sub)

    p = sub.add_parser(
        "export",
        help="a checkpoint as ONNX (onnxruntime) or TorchScript, self-describing",
        description="Write the acoustic model (features in, log-probs out, dynamic "
        "batch and time axes) with the checkpoint's description (vocabulary, "
        "frontend, sample rate, model) inside the file; asr transcribe and asr "
        "evaluate take it as --checkpoint. The export is checked against the "
        "checkpoint before it is written.",
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="model.onnx or model.pt"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantize the ONNX model's weights to 8 bits (dynamic quantization)",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="one step of a streaming (unidirectional) model, its state as explicit "
        "inputs and outputs (ONNX)",
    )

    p = sub.add_parser("model-info", help="parameter counts of the model presets")

    args = parser.parse_args(argv)
    if args.command == "data":
        return run_data(args)
    if args.command == "ocr":
        return run_ocr(args)
    try:
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "transcribe":
            return run_transcribe(args)
        if args.command == "stream":
            return run_stream(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "plot-alignment":
            return _plot_alignment(args)
        if args.command == "lm":
            return _lm_build(args) if args.lm_command == "build" else _lm_tune(args)
        if args.command == "export":
            return _export(args)
        if args.command == "model-info":
            return _model_info()
        if args.command == "serve":
            return run_serve(args)
    except _user_errors() as err:
        print(f"asr {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 2


def _train(argv: list[str]) -> int:
    from asr.configs import ConfigError
    from asr.probe import MemoryProbeError
    from asr.train import run_training

    try:
        run_training(argv)
    except (*_user_errors(), ConfigError, MemoryProbeError) as err:
        print(f"asr train: error: {err}", file=sys.stderr)
        return 1
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from asr.layouts import import_corpus
    from asr.manifest import write_manifest

    tokenizer, output_frames = None, None
    if args.checkpoint is not None:
        from asr.inference import load_model

        recognizer = load_model(args.checkpoint)
        tokenizer, output_frames = recognizer.tokenizer, recognizer.output_frames
    found = import_corpus(args.source, args.layout, tokenizer, output_frames)
    utts = found.utterances
    write_manifest(args.output, utts)
    hours = sum(u.duration for u in utts) / 3600
    log.info(
        "%s: %d utterances, %.2f h, from %s (%s)",
        args.output,
        len(utts),
        hours,
        args.source,
        found.layout,
    )
    if found.report.ok:
        return 0
    print(f"{args.source}: {found.summary(args.max_examples)}", file=sys.stderr)
    return 1


def _validate(args: argparse.Namespace) -> int:
    from asr.manifest import validate_manifest

    tokenizer, output_frames = None, None
    if args.checkpoint is not None:
        from asr.inference import load_model

        recognizer = load_model(args.checkpoint)
        tokenizer, output_frames = recognizer.tokenizer, recognizer.output_frames
    elif args.frames_per_second is not None:
        fps = args.frames_per_second
        output_frames = lambda seconds: int(seconds * fps)  # noqa: E731
    report = validate_manifest(
        args.manifest,
        tokenizer,
        output_frames=output_frames,
        check_audio=not args.no_audio,
        max_duration=args.max_duration,
    )
    print(f"{args.manifest}: {report.summary(args.max_examples)}")
    return 0 if report.ok else 1


def _evaluate(args: argparse.Namespace) -> int:
    from asr.atomic import WriteError, atomic_write_text
    from asr.evaluate import default_report_path, evaluate

    start = time.perf_counter()
    ev = evaluate(
        args.manifest,
        args.checkpoint,
        batch_seconds=args.batch_seconds,
        device=args.device,
        resamples=args.bootstrap,
        lm=args.lm,
        decoder_settings={
            "alpha": args.alpha,
            "beta": args.beta,
            "beam_width": args.beam_width,
        },
        progress=sys.stderr,
        silence_db=silence_db(args),
    )
    result = ev.summary()
    result["wall_seconds"] = round(time.perf_counter() - start, 3)
    for u in ev.failed:
        print(
            f"asr evaluate: unreadable audio {u.audio_filepath} ({u.id}): {u.error}; "
            f"scored as {u.words.deletions} deletions",
            file=sys.stderr,
        )
    result["report"] = None
    if not args.no_report:
        report = args.report or default_report_path(
            args.checkpoint, args.manifest, ev.decoder
        )
        try:
            atomic_write_text(report, ev.report(args.order) + "\n")
        except WriteError as err:
            print(
                f"asr evaluate: warning: {err}; choose a place with --report",
                file=sys.stderr,
            )
        else:
            result["report"] = str(report)
            print(f"asr evaluate: per-utterance report in {report}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        pct = _percent
        lo, hi = result["wer_ci"]
        unreadable = f" ({len(ev.failed)} unreadable)" if ev.failed else ""
        print(
            f"{args.manifest}: {result['utterances']} utterances{unreadable}, "
            f"{result['words']} words, {ev.decoder} decoding\n"
            f"WER {pct(result['wer'])} (S {result['substitutions']}, "
            f"D {result['deletions']}, I {result['insertions']}; "
            f"95% CI {pct(lo)} - {pct(hi)}), CER {pct(result['cer'])}\n"
            f"RTF {result['rtf']:.4f} (model {result['rtf_model']:.4f}, decoding "
            f"{result['rtf_decoding']:.4f}) on {result['audio_seconds']:.1f} s of audio"
        )
        cers = [r["cer"] for r in result["per_speaker"] if r["cer"] is not None]
        if result["speakers"] >= 2 and cers:  # one speaker's utterances share errors
            wlo, whi = result["wer_ci_speakers"]
            clo, chi = result["cer_ci_speakers"]
            print(
                f"{result['speakers']} speakers: CER {pct(min(cers))} - "
                f"{pct(max(cers))} by speaker; 95% CI resampling whole speakers: "
                f"WER {pct(wlo)} - {pct(whi)}, CER {pct(clo)} - {pct(chi)}"
            )
    return 3 if args.strict and ev.failed else 0


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _plot_alignment(args: argparse.Namespace) -> int:
    from asr.plots import plot_alignment

    hyp = plot_alignment(args.audio, args.checkpoint, args.output, args.device)
    print(f"{args.output}: {args.audio}: {hyp.text}")
    return 0


def _add_lm_parser(sub: argparse._SubParsersAction) -> None:
    lm = sub.add_parser("lm", help="KenLM language models: build, tune weights")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)
    p = lm_sub.add_parser(
        "build",
        help="n-gram LM from a text corpus (normalized like the transcripts)",
        description="Normalize CORPUS (one sentence per line; .gz read as is) like "
        "the training transcripts, estimate a Kneser-Ney model with KenLM's lmplz "
        "and binarize it (or keep the ARPA text when OUTPUT ends in .arpa). The "
        "unigram list pyctcdecode needs is written beside it as "
        "OUTPUT.unigrams.txt. Lines with characters outside the vocabulary are "
        "skipped and counted.",
    )
    p.add_argument("corpus", type=Path, help="text file, one sentence per line")
    p.add_argument("-o", "--output", type=Path, required=True, help="e.g. lm.bin")
    p.add_argument("--order", type=int, default=4, help="n-gram order (default: 4)")
    p.add_argument("--memory", default="1G", help="lmplz -S (default: 1G)")
    p.add_argument("--tmp-dir", type=Path, help="lmplz's temporary files")
    p.add_argument(
        "--discount-fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lmplz --discount_fallback (default: for small corpora, or on retry)",
    )
    p.add_argument("--binary-type", choices=("probing", "trie"), default="probing")

    p = lm_sub.add_parser(
        "tune",
        help="LM weight and word bonus by WER on a dev manifest",
        description="Run the model once over MANIFEST, then beam-search its cached "
        "outputs with the LM for each (alpha, beta) of a grid (or --random N "
        "samples in the grid's ranges); print a table and write the best settings "
        "to decoder.json beside the checkpoint, where `asr transcribe` and `asr "
        "evaluate` find them when given --lm.",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--lm", type=Path, required=True)
    p.add_argument("--alphas", type=float, nargs="+", help="LM weights to try")
    p.add_argument("--betas", type=float, nargs="+", help="word bonuses to try")
    p.add_argument("--random", type=int, metavar="N", help="N random trials")
    p.add_argument("--seed", type=int, default=0, help="random search seed")
    p.add_argument("--beam-width", type=int, help="beam width while tuning")
    p.add_argument("--workers", type=int, help="decoding processes (default: CPUs)")
    p.add_argument("--cache", type=Path, help="log-probs .npz cache (reused)")
    p.add_argument("--no-save", action="store_true", help="do not write decoder.json")
    p.add_argument("--json", action="store_true", help="print a JSON result")
    p.add_argument("--batch-seconds", type=float, default=300.0)
    p.add_argument("--device", default="cpu")


def _lm_build(args: argparse.Namespace) -> int:
    from asr.lm import build_lm

    result = build_lm(
        args.corpus,
        args.output,
        order=args.order,
        memory=args.memory,
        tmp_dir=args.tmp_dir,
        discount_fallback=args.discount_fallback,
        binary_type=args.binary_type,
    )
    print(result.summary())
    return 0


def _lm_tune(args: argparse.Namespace) -> int:
    from asr.decoding import save_decoder_settings
    from asr.lm import load_lm
    from asr.tune import format_tune_table, manifest_log_probs, tune_lm_weights

    load_lm(args.lm)  # a missing or broken LM fails before the model runs
    data = manifest_log_probs(
        args.manifest, args.checkpoint, args.batch_seconds, args.device, args.cache
    )
    settings = {"beam_width": args.beam_width, "workers": args.workers}
    result = tune_lm_weights(
        data,
        args.lm,
        alphas=args.alphas,
        betas=args.betas,
        random_trials=args.random,
        seed=args.seed,
        manifest=str(args.manifest),
        **{k: v for k, v in settings.items() if v is not None},
    )
    out = result.to_dict()
    out["saved"] = None
    if not args.no_save:
        out["saved"] = str(save_decoder_settings(args.checkpoint, result.settings))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(format_tune_table(result))
        if out["saved"]:
            print(f"wrote {out['saved']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from asr.export import export_model

    out = export_model(
        args.checkpoint, args.output, int8=args.int8, streaming=args.streaming
    )
    kind = "ONNX, int8 weights" if out.int8 else out.format
    print(
        f"wrote {out.path} ({kind}, {out.bytes / 1e6:.1f} MB) in {out.seconds:.1f} s; "
        f"against the checkpoint: max |log-prob difference| {out.max_abs_diff:.2g}, "
        f"best class agrees on {100 * out.greedy_agree:.1f}% of frames"
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
