"""``asr stream``: live transcription of a file or of raw PCM on standard input,
chunk by chunk, with partial results as they form and finals as segments end."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

__all__ = ["add_stream_parser", "run_stream"]

_STREAM_EPILOG = """\
Input: an audio file (any format libsndfile reads, resampled to the model's rate as
asr transcribe does), or with --raw 16-bit little-endian mono PCM (a file, or - for
standard input), e.g.
  arecord -q -t raw -f S16_LE -r 16000 -c 1 | asr stream - --raw --checkpoint M.ckpt
Output: on a terminal the partial result rewrites one line and each final is
printed below it; otherwise each final's text on a line of its own (--format text)
or one JSON object per event (--format jsonl: {"type": "partial" | "final", "text",
"start", "end"}, finals with "words": word, start, end, confidence). Times are
seconds from the start of the stream. A segment ends after --endpoint-seconds of
non-speech and is decoded with the decoder settings (greedy, or beam search with
--lm and the checkpoint's decoder.json, as asr transcribe)."""


def add_stream_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream",
        help="live transcription of a file or of raw PCM on stdin",
        description="Transcribe audio as a stream with a streaming (unidirectional) "
        "checkpoint: partial results at every chunk, finals when a pause ends a "
        "segment.",
        epilog=_STREAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        nargs="?",
        default="-",
        metavar="FILE",
        help="audio file, or - for standard input (with --raw; default: -)",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument(
        "--raw", action="store_true", help="the input is s16le mono PCM, no header"
    )
    p.add_argument(
        "--sample-rate",
        type=int,
        help="the rate of --raw input in Hz (default: the model's)",
    )
    p.add_argument(
        "--chunk-ms",
        type=float,
        default=100.0,
        help="milliseconds of audio per chunk (default: 100)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace the input at real time (as a microphone would deliver it)",
    )
    p.add_argument(
        "--format",
        choices=("text", "jsonl"),
        default="text",
        help="output format (default: text)",
    )
    p.add_argument(
        "--endpoint-seconds",
        type=float,
        default=0.8,
        help="non-speech that ends a segment (default: 0.8)",
    )
    p.add_argument("--lm", type=Path, help="KenLM model for beam search")
    p.add_argument("--alpha", type=float, help="LM weight (beam search)")
    p.add_argument("--beta", type=float, help="word insertion bonus (beam search)")
    p.add_argument("--beam-width", type=int, help="beam width (beam search)")
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op CPU threads (default: 1; chunks are small)",
    )


class InputError(ValueError):
    """Input that cannot be streamed; the message names it."""


def _raw_chunks(stream: BinaryIO, name: str, samples: int) -> Iterator[np.ndarray]:
    """s16le PCM from ``stream`` in chunks of ``samples``, as float32 in [-1, 1).

    Raises:
        InputError: at the end, an odd number of bytes (after the whole chunks,
            which are yielded first).
    """
    want = 2 * samples
    total = 0
    pending = b""
    while True:
        data = stream.read(want - len(pending))
        if not data:
            break
        total += len(data)
        pending += data
        if len(pending) < want:
            continue
        yield np.frombuffer(pending, "<i2").astype(np.float32) / 32768.0
        pending = b""
    whole = len(pending) // 2 * 2
    if whole:
        yield np.frombuffer(pending[:whole], "<i2").astype(np.float32) / 32768.0
    if len(pending) % 2:
        raise InputError(
            f"{name}: {total} bytes is not a whole number of 16-bit samples "
            "(the last byte is left over)"
        )


def _resampled(
    chunks: Iterator[np.ndarray], rate: int, target: int
) -> Iterator[np.ndarray]:
    """Chunks at ``rate`` -> chunks at ``target`` (soxr "HQ" run as a stream, as
    ``asr transcribe`` resamples files)."""
    if rate == target:
        yield from chunks
        return
    import soxr

    resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
    for chunk in chunks:
        yield resampler.resample_chunk(chunk)
    yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _rechunk(blocks: Iterator[np.ndarray], samples: int) -> Iterator[np.ndarray]:
    """Blocks of any sizes -> chunks of ``samples`` (the last one shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        if held < samples:
            continue
        joined = np.concatenate(pending)
        cut = len(joined) // samples * samples
        for i in range(0, cut, samples):
            yield joined[i : i + samples]
        pending, held = [joined[cut:]], len(joined) - cut
    if held:
        yield np.concatenate(pending)


def _audio(args: argparse.Namespace, rate: int, samples: int) -> Iterator[np.ndarray]:
    """The input as float32 chunks of ``samples`` at ``rate``."""
    if args.raw:
        given = args.sample_rate or rate
        if given <= 0:
            raise InputError(f"--sample-rate must be positive, got {given}")
        if args.input == "-":
            source: BinaryIO = sys.stdin.buffer
            name = "standard input"
        else:
            try:
                source = open(args.input, "rb")  # noqa: SIM115 -- closed below
            except OSError as err:
                raise InputError(f"{args.input}: {err.strerror}") from None
            name = args.input
        try:
            per_read = max(1, round(samples * given / rate))
            raw = _raw_chunks(source, name, per_read)
            yield from _rechunk(_resampled(raw, given, rate), samples)
        finally:
            if source is not sys.stdin.buffer:
                source.close()
        return
    if args.input == "-":
        raise InputError(
            "standard input is read as raw PCM: give --raw (and --sample-rate)"
        )
    if args.sample_rate is not None:
        raise InputError("--sample-rate is for --raw input; a file has its own")
    from asr.audio import stream_audio

    yield from _rechunk(stream_audio(args.input, rate), samples)


class _Printer:
    """Events to the output: a live line on a terminal, lines or JSON otherwise."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        self.live = fmt == "text" and out.isatty()
        self.shown = False  # a partial is on the terminal's last line

    def __call__(self, event: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.out.write(json.dumps(event) + "\n")
        elif event["type"] == "final":
            self.clear()
            self.out.write(event["text"] + "\n")
        elif self.live:
            self.out.write("\r\x1b[K" + event["text"])
            self.shown = True
        self.out.flush()

    def clear(self) -> None:
        if self.live and self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False


def run_stream(args: argparse.Namespace) -> int:
    import torch

    from asr.audio import AudioError
    from asr.decoding import DecoderError, make_decoder
    from asr.inference import CheckpointError
    from asr.lm import LMError
    from asr.streaming import Session, StreamingError, StreamingModel

    def fail(message: object) -> int:
        printer.clear()
        line = f"asr stream: error: {message}"
        print(line.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr)
        return 1

    printer = _Printer(sys.stdout, args.format)
    previous_threads = torch.get_num_threads()
    decoder = None
    try:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        if not args.chunk_ms > 0:
            raise InputError(f"--chunk-ms must be positive, got {args.chunk_ms}")
        if not args.endpoint_seconds > 0:
            raise InputError(
                f"--endpoint-seconds must be positive, got {args.endpoint_seconds}"
            )
        if args.input != "-" and not Path(args.input).is_file():
            raise InputError(f"{args.input}: no such file")
        torch.set_num_threads(args.threads)
        model = StreamingModel.load(args.checkpoint, args.device)
        decoder = make_decoder(
            model.labels,
            args.checkpoint,
            args.lm,
            alpha=args.alpha,
            beta=args.beta,
            beam_width=args.beam_width,
        )
        session = Session(model, decoder, endpoint_seconds=args.endpoint_seconds)
        rate = model.sample_rate
        samples = max(1, round(args.chunk_ms * rate / 1000))
        start = time.monotonic()
        sent = 0
        try:
            for chunk in _audio(args, rate, samples):
                sent += len(chunk)
                if args.realtime:  # a chunk is complete when its last sample is
                    delay = start + sent / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                for event in session.accept(chunk):
                    printer(event)
        finally:
            # what arrived before a bad byte count or a read error still ends well
            if not session.finished:
                for event in session.finish():
                    printer(event)
    except (
        InputError,
        AudioError,
        CheckpointError,
        StreamingError,
        DecoderError,
        LMError,
    ) as err:
        return fail(err)
    except KeyboardInterrupt:
        printer.clear()
        print("asr stream: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(previous_threads)
        close = getattr(decoder, "close", None)
        if close is not None:
            close()
    printer.clear()
    return 0
