"""``asr transcribe``: argument parsing and the run (sources -> transcripts -> files),
with the output written as the work goes (``-o DIR``) and nothing lost to one bad
file, a full disk or Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_gate_options", "add_transcribe_parser", "run_transcribe", "silence_db"]


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


def add_transcribe_parser(sub: argparse._SubParsersAction) -> None:
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
    add_gate_options(p)
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    p.add_argument(
        "--threads",
        type=int,
        help="intra-op CPU threads (default: 1, measured fastest for the demo "
        "model on 2 cores shared with other work; on 2 idle cores 2 threads are "
        "1.3-1.6x faster, and more can help a large model on many idle cores)",
    )


def add_gate_options(p: argparse.ArgumentParser) -> None:
    from asr.audio import SILENCE_DB

    p.add_argument(
        "--silence-db",
        type=float,
        default=SILENCE_DB,
        help="the silence gate: a file whose loudest 10 ms is quieter than this "
        f"(dBFS, RMS) transcribes as nothing (default: {SILENCE_DB:g})",
    )
    p.add_argument(
        "--no-silence-gate",
        action="store_true",
        help="let the model read every frame, however quiet",
    )


def silence_db(args: argparse.Namespace) -> float | None:
    return None if args.no_silence_gate else args.silence_db


def run_transcribe(args: argparse.Namespace) -> int:
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
        # a file name that is not UTF-8 is shown with \x escapes, whatever stderr is
        line = f"asr transcribe: error: {failure}"
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        print(line, file=sys.stderr, flush=True)

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
                silence_db=silence_db(args),
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
            n = len(directory.written)
            files = "the 1 file" if n == 1 else f"the {n} files"
            kept = f"; {files} written to {args.output} kept"
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
