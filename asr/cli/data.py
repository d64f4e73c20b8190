"""``asr data``: the corpora (LibriSpeech from OpenSLR, the offline synthetic corpus
and its LM text); argument parsing and forwarding to :mod:`asr.librispeech` and
:mod:`asr.synthetic`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_data_parser", "run_data"]


def add_data_parser(sub: argparse._SubParsersAction) -> None:
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
        "synthetic-voice",
        help="more speech of one speaker of a synthetic corpus, on sentences its "
        "dev and test sets do not hold",
        description="Re-plan a corpus from its config.json and have one of its "
        "speakers (same voice, tempo, pitch and channel) say WordNet sentences no "
        "dev or test speaker says: OUT/train and OUT/dev in the LibriSpeech layout.",
    )
    p.add_argument("corpus", type=Path, help="a corpus made by asr data synthetic")
    p.add_argument("out_dir", type=Path, help="output directory")
    p.add_argument("--speaker", required=True, help="the speaker's id, e.g. 9503")
    p.add_argument("--minutes", type=float, default=10.0, help="train audio (10)")
    p.add_argument("--dev-minutes", type=float, default=2.0, help="dev audio (2)")
    p.add_argument("--seed", type=int, default=1, help="sentence order and noise (1)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes"
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


def run_data(args: argparse.Namespace) -> int:
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
        "synthetic-voice": _synthetic_voice,
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


def _synthetic_voice(args: argparse.Namespace) -> int:
    from asr.synthetic.voice import generate_voice

    seconds = generate_voice(
        args.corpus,
        args.speaker,
        args.out_dir,
        minutes=args.minutes,
        dev_minutes=args.dev_minutes,
        seed=args.seed,
        jobs=args.jobs,
        wordnet_dir=args.wordnet_dir,
    )
    made = ", ".join(f"{split} {s / 60:.1f} min" for split, s in seconds.items())
    print(f"{args.out_dir}: speaker {args.speaker}: {made}")
    return 0


def _synthetic_lm_text(args: argparse.Namespace) -> int:
    from asr.synthetic.lm_text import write_lm_text

    summary = write_lm_text(args.out, args.include, args.exclude, args.wordnet_dir)
    print(summary.format())
    return 0
