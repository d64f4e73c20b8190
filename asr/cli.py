"""The ``asr`` command: argument parsing for every sub-command, forwarding to the
library. A user's mistake becomes one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("asr")


def _user_errors() -> tuple[type[Exception], ...]:
    from asr.atomic import WriteError
    from asr.audio import AudioError
    from asr.datamodule import InvalidDataError
    from asr.decoding import DecoderError
    from asr.inference import CheckpointError
    from asr.lm import LMError
    from asr.manifest import ManifestError
    from asr.text import TextError
    from asr.tune import TuneError

    return (
        AudioError,
        CheckpointError,
        DecoderError,
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
    _add_data_parser(sub)

    p = sub.add_parser("manifest", help="JSON Lines manifest from a LibriSpeech tree")
    p.add_argument("tree", type=Path, help="directory holding SPK/CHAPTER/*.flac")
    p.add_argument("-o", "--output", type=Path, required=True)

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

    _add_transcribe_parser(sub)

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
    _add_gate_options(p)
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

    p = sub.add_parser("model-info", help="parameter counts of the model presets")

    args = parser.parse_args(argv)
    if args.command == "data":
        return _data(args)
    try:
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "transcribe":
            return _transcribe(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "plot-alignment":
            return _plot_alignment(args)
        if args.command == "lm":
            return _lm_build(args) if args.lm_command == "build" else _lm_tune(args)
        if args.command == "model-info":
            return _model_info()
    except _user_errors() as err:
        print(f"asr {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 2


def _train(argv: list[str]) -> int:
    from asr.train import ConfigError, run_training

    try:
        run_training(argv)
    except (*_user_errors(), ConfigError) as err:
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
        silence_db=_silence_db(args),
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


def _model_info() -> int:
    from asr.model import PRESETS, DeepSpeech2, ModelConfig, count_parameters

    for name, preset in PRESETS.items():
        model = DeepSpeech2(
            ModelConfig.from_dict({**ModelConfig().to_dict(), **preset})
        )
        print(f"{name:12s} {count_parameters(model):>12,} parameters")
    return 0


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``asr data librispeech ...``, ``asr data synthetic ...`` and
    ``asr data synthetic-lm-text ...``."""
    from asr.librispeech.corpus import EVAL_PARTS, LM_ARPA, OPENSLR
    from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR

    data = sub.add_parser("data", help="corpora: asr data {librispeech,synthetic} -h")
    corpus = data.add_subparsers(dest="data_command", required=True)
    ls = corpus.add_parser(
        "librispeech",
        help="LibriSpeech (OpenSLR 12) and its language models (OpenSLR 11)",
        description="LibriSpeech (OpenSLR 12) and its language models (OpenSLR 11).",
    )
    ls_sub = ls.add_subparsers(dest="ls_command", required=True)

    def add_host(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mirror",
            default=OPENSLR,
            help=f"base URL replacing {OPENSLR}: files are fetched from "
            "MIRROR/12/<part>.tar.gz and MIRROR/11/<file> (default: %(default)s)",
        )
        p.add_argument("--retries", type=int, default=5, help="resumes per file")
        p.add_argument("--timeout", type=float, default=60.0, help="socket timeout, s")
        p.add_argument("--backoff", type=float, default=5.0, help="wait * attempt, s")

    p = ls_sub.add_parser(
        "download",
        help="download parts and LM files, resumable, MD5-checked",
        description="Download into DEST; a file already there and verified is "
        "skipped without a request; an interrupted download resumes (HTTP Range).",
    )
    p.add_argument("--parts", nargs="*", default=[], help="100|460|960 or part names")
    p.add_argument("--lm-files", nargs="*", default=[], help="OpenSLR 11 file names")
    p.add_argument("--dest", type=Path, required=True, help="the downloads directory")
    add_host(p)
    p = ls_sub.add_parser("extract", help="extract downloaded parts, safely")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--downloads", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True, help="gets LibriSpeech/<part>")
    p = ls_sub.add_parser("manifests", help="JSON Lines manifests per part + training")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument(
        "--corpus",
        type=Path,
        action="append",
        required=True,
        help="a directory holding LibriSpeech/<part> or <part> (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True)
    p = ls_sub.add_parser(
        "lm", help="download an OpenSLR 11 ARPA model; lower-case and binarize it"
    )
    p.add_argument("--kind", choices=sorted(LM_ARPA), default="3-gram.pruned.1e-7")
    p.add_argument("--downloads", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="e.g. lm.bin")
    p.add_argument("--binary-type", choices=("probing", "trie"), default="probing")
    add_host(p)
    p = ls_sub.add_parser("results", help="RESULTS.md from asr evaluate --json files")
    p.add_argument("--results", type=Path, required=True, help="<set>.<dec>.json dir")
    p.add_argument("--sets", nargs="+", default=list(EVAL_PARTS))
    p.add_argument("--decoder-json", type=Path, help="decoder.json (asr lm tune)")
    p.add_argument("--note", action="append", default=[], help="a line of notes")
    p.add_argument("-o", "--output", type=Path, required=True)

    p = corpus.add_parser(
        "synthetic",
        help="generate an offline English speech corpus with text-to-speech voices",
        description="Generate an offline English speech corpus (LibriSpeech layout) "
        "with espeak-ng, flite and festival voices; dev/test use held-out voices.",
    )
    p.add_argument("out_dir", type=Path, help="output directory")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="total audio in hours (default 2)")
    size.add_argument(
        "--minutes", type=float, help="total audio in minutes (toy sizes)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes"
    )
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    p.add_argument("--dev-voices", type=int, default=10, help="speakers in dev")
    p.add_argument("--test-voices", type=int, default=10, help="speakers in test")
    p.add_argument("--max-words", type=int, default=25, help="longest sentence, words")
    p.add_argument("--min-words", type=int, default=2, help="shortest sentence, words")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="share of the total for dev, and again for test (default 0.1)",
    )
    p.add_argument(
        "--utts-per-speaker",
        type=int,
        default=20,
        help="about how many sentences each training speaker says (default 20)",
    )
    p.add_argument(
        "--allow-missing-engines",
        action="store_true",
        help="skip an engine or voice that is not installed (with a warning)",
    )
    p.add_argument(
        "--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR, help="WordNet data.*"
    )

    p = corpus.add_parser(
        "synthetic-lm-text",
        help="LM text for the synthetic corpus: WordNet without held-out synsets",
        description="Write the training transcripts (--include) and every WordNet "
        "usage example whose synset holds no sentence of an --exclude manifest, "
        "one per line, each once, normalized like the transcripts.",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="text to write")
    p.add_argument(
        "--include", type=Path, nargs="*", default=[], help="manifests to keep whole"
    )
    p.add_argument(
        "--exclude",
        type=Path,
        nargs="*",
        default=[],
        help="held-out manifests: their sentences' synsets are left out",
    )
    p.add_argument(
        "--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR, help="WordNet data.*"
    )


def _data(args: argparse.Namespace) -> int:
    """``asr data ...``: one line on stderr for a user's mistake, status 1."""
    from asr.atomic import WriteError
    from asr.synthetic.errors import CorpusError

    errors: tuple[type[Exception], ...] = (CorpusError, WriteError)
    name = f"asr data {args.data_command} {getattr(args, 'ls_command', '')}".strip()
    if args.data_command == "librispeech":
        from asr.librispeech import LibriSpeechError
        from asr.lm import LMError
        from asr.manifest import ManifestError

        errors += (LibriSpeechError, LMError, ManifestError)
    run = {
        "librispeech": _librispeech,
        "synthetic": _synthetic,
        "synthetic-lm-text": _synthetic_lm_text,
    }[args.data_command]
    try:
        return run(args)
    except errors as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{name}: interrupted; the same command finishes the job", file=sys.stderr
        )
        return 130


def _librispeech(args: argparse.Namespace) -> int:
    from asr import librispeech as ls

    names = ("mirror", "retries", "timeout", "backoff")
    host = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if args.ls_command == "download":
        parts = ls.resolve_parts(args.parts)
        ls.download_files(parts, args.lm_files, args.dest, **host)
    elif args.ls_command == "extract":
        for part in ls.resolve_parts(args.parts):
            ls.extract(args.downloads / f"{part}.tar.gz", args.dest, part)
    elif args.ls_command == "manifests":
        ls.write_manifests(args.corpus, ls.resolve_parts(args.parts), args.out)
    elif args.ls_command == "lm":
        ls.download_arpa_lm(
            args.kind, args.downloads, args.output, args.binary_type, **host
        )
    else:
        table = ls.write_results(
            args.output, args.results, args.sets, args.decoder_json, args.note
        )
        print(table, end="")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from asr.synthetic.corpus import generate_corpus

    hours = 2.0 if args.hours is None else args.hours
    if args.minutes is not None:
        hours = args.minutes / 60
    # The options' destinations are generate_corpus's parameter names.
    names = ("seed", "jobs", "sample_rate", "dev_voices", "test_voices", "max_words")
    names += ("min_words", "eval_fraction", "utts_per_speaker", "wordnet_dir")
    names += ("allow_missing_engines",)
    options = {k: getattr(args, k) for k in names}
    print(generate_corpus(args.out_dir, hours=hours, **options).format())
    return 0


def _synthetic_lm_text(args: argparse.Namespace) -> int:
    from asr.synthetic.lm_text import write_lm_text

    summary = write_lm_text(args.out, args.include, args.exclude, args.wordnet_dir)
    print(summary.format())
    return 0


_TRANSCRIBE_EPILOG = """\
Output: text (one input: its text; several: NAME<TAB>TEXT per line), json (one
document: model, decoder settings, results with word times and confidences, failed
inputs), srt / vtt (subtitles; one recording per file, so several inputs need
-o DIR), ctm (NIST: utterance channel start duration word confidence). -o FILE
writes everything to one file, -o DIR/ (an existing directory, or a trailing /)
one file per input named after it; files are written atomically. Times are seconds
from the start of each file. Files longer than --window-seconds are read in blocks
and transcribed in overlapping windows with bounded memory. An unreadable input is
named on stderr and the others are still transcribed; exit status 1 if any input
failed, else 0."""


def _add_transcribe_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="words with times from audio files, directories or manifests",
        description="Transcribe audio (any format libsndfile reads, any sample "
        "rate and channels) with a checkpoint; greedy decoding, or beam search "
        "with --lm / --beam-width.",
        epilog=_TRANSCRIBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="audio files, directories (searched recursively) or .jsonl manifests",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--lm", type=Path, help="KenLM model for beam search")
    p.add_argument("--alpha", type=float, help="LM weight (beam search)")
    p.add_argument("--beta", type=float, help="word insertion bonus (beam search)")
    p.add_argument("--beam-width", type=int, help="beam width (beam search)")
    p.add_argument(
        "--format",
        choices=("text", "json", "srt", "vtt", "ctm"),
        default="text",
        help="output format (default: text)",
    )
    p.add_argument("-o", "--output", help="output file, or directory (see below)")
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=300.0,
        help="padded seconds of audio per model batch (default: 300)",
    )
    p.add_argument(
        "--window-seconds",
        type=float,
        default=30.0,
        help="longer files are transcribed in windows this long (default: 30)",
    )
    p.add_argument(
        "--overlap-seconds",
        type=float,
        default=5.0,
        help="overlap of consecutive windows (default: 5)",
    )
    _add_gate_options(p)
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    p.add_argument(
        "--threads",
        type=int,
        help="intra-op CPU threads (default: 1, measured fastest for the demo "
        "model on 2 cores shared with other work; on 2 idle cores 2 threads are "
        "1.3-1.6x faster, and more can help a large model on many idle cores)",
    )


def _add_gate_options(p: argparse.ArgumentParser) -> None:
    from asr.posteriors import SILENCE_DB

    p.add_argument(
        "--silence-db",
        type=float,
        default=SILENCE_DB,
        help="the silence gate: audio quieter than this (dBFS, RMS of 10 ms) for "
        f"longer than 0.2 s is read as silence (default: {SILENCE_DB:g})",
    )
    p.add_argument(
        "--no-silence-gate",
        action="store_true",
        help="let the model read every frame, however quiet",
    )


def _silence_db(args: argparse.Namespace) -> float | None:
    return None if args.no_silence_gate else args.silence_db


def _transcribe(args: argparse.Namespace) -> int:
    import torch

    from asr.decoding import DecoderError, make_decoder
    from asr.formats import DirectoryWriter, OutputError, output_plan, write_results
    from asr.inference import load_model
    from asr.lm import LMError
    from asr.transcribe import (
        DEFAULT_THREADS,
        Failure,
        Transcriber,
        Transcript,
        collect_sources,
        model_summary,
    )

    def report(failure: object) -> None:
        print(f"asr transcribe: error: {failure}", file=sys.stderr, flush=True)

    errors = (OutputError, DecoderError, LMError)
    # The thread count is process-wide: restore it, so that calling main() from
    # Python (tests, notebooks) leaves the caller's torch as it was.
    previous_threads = torch.get_num_threads()
    directory: DirectoryWriter | None = None
    unwritten: dict[int, Failure] = {}
    try:
        sources, failed_inputs = collect_sources(args.inputs)
        n_inputs = len(sources) + len(failed_inputs)
        plan = output_plan(args.format, n_inputs, args.output)  # before any work
        for failure in failed_inputs:
            report(failure)
        threads = DEFAULT_THREADS if args.threads is None else args.threads
        if threads < 1:
            raise OutputError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        recognizer = load_model(args.checkpoint, args.device)
        decoder = make_decoder(
            recognizer.tokenizer.vocab,
            args.checkpoint,
            args.lm,
            alpha=args.alpha,
            beta=args.beta,
            beam_width=args.beam_width,
        )
        try:
            transcriber = Transcriber(
                recognizer,
                decoder,
                batch_seconds=args.batch_seconds,
                window_seconds=args.window_seconds,
                overlap_seconds=args.overlap_seconds,
                silence_db=_silence_db(args),
            )
        except ValueError as err:
            raise OutputError(str(err)) from None
        header = {
            "model": model_summary(recognizer, args.checkpoint),
            "decoder": transcriber.settings(),
        }
        if plan == "directory":
            directory = DirectoryWriter(args.output, args.format, sources, header)

        def write(index: int, transcript: Transcript) -> None:
            assert directory is not None
            try:
                directory.write(index, transcript)
            except OutputError as err:  # this file alone; the others go on
                unwritten[index] = Failure(transcript.source, str(err))
                report(err)

        results = transcriber.transcribe(
            sources,
            on_failure=report,
            progress=sys.stderr,
            on_result=write if directory is not None else None,
        )
        close = getattr(decoder, "close", None)
        if close is not None:
            close()
        results = [unwritten.get(i, r) for i, r in enumerate(results)]
        if directory is not None:
            written: list[Path] | str = directory.written
        elif not any(isinstance(r, Transcript) for r in results):
            written = []  # nothing succeeded: an earlier output stays as it was
        else:
            written = write_results(
                [*results, *failed_inputs], args.format, args.output, header, n_inputs
            )
    except errors as err:
        print(f"asr transcribe: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kept = ""
        if directory is not None and directory.written:
            kept = f"; the {len(directory.written)} files written to {args.output} "
            kept += "are kept"
        print(f"asr transcribe: interrupted{kept}", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(previous_threads)
    if isinstance(written, str):
        # A name that is not UTF-8 goes out as the bytes the file system holds.
        out = getattr(sys.stdout, "buffer", None)
        if out is None:  # a text-only stream (redirected in Python)
            sys.stdout.write(written)
        else:
            sys.stdout.flush()
            out.write(written.encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    elif len(written) == 1 and directory is None:
        print(f"asr transcribe: wrote {written[0]}", file=sys.stderr)
    elif written:
        files = "1 file" if len(written) == 1 else f"{len(written)} files"
        print(f"asr transcribe: wrote {files} to {args.output}", file=sys.stderr)
    n_failed = len(failed_inputs) + sum(not isinstance(r, Transcript) for r in results)
    if n_failed:
        nothing = "; nothing written" if not written else ""
        print(
            f"asr transcribe: {n_failed} of {n_inputs} inputs failed (named above)"
            f"{nothing}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
