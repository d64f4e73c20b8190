#!/usr/bin/env python
"""Benchmark ``asr transcribe``: real-time factor, intra-op threads, peak memory.

Three tables, in markdown, and with ``--lm`` a fourth:

1. Threads: the same transcription (reading, features, model, greedy decoding) with
   ``torch.set_num_threads(1)`` and ``(2)``, alternated in one process after a warm-up
   run; the machine is shared and noisy, so the ratio quoted is the median of the
   per-round ratios.
2. Decoders and long audio, in process: greedy; beam search with ``--lm`` (if given
   and asr.decoding has BeamSearchDecoder); one long file (the inputs' audio joined
   end to end, ``--long-seconds``) transcribed in windows and in one pass. RTF is
   compute seconds / audio seconds, "x RT" its inverse.
3. The command itself, one process per row: wall time (start-up and model loading
   included) and peak RSS (``ru_maxrss`` of the child).
4. Our beam search against stock pyctcdecode, end to end (audio files in, texts
   out: reading, features, model, decoding, as ``asr transcribe --lm LM
   --beam-width B`` runs them), at each of ``--beam-widths``: ours is
   :func:`asr.decoding.make_decoder`'s (the checkpoint's ``decoder.json``
   settings, the beam overridden), the peer bench_decode's ``StockDecoder``
   (``build_ctcdecoder`` + ``decode_beams_batch`` over a fork pool as many workers
   as ours) with the same settings. Fresh transcribers each round (untimed), the
   two alternating after a warm-up run of each; time and ratio are medians over
   rounds. With a manifest, WER of each and how many texts are identical. Then the
   first decode in a fresh process (decoder built, one utterance decoded: LM
   loading, and for ours loading the compiled kernel), for each.

    python tools/bench_transcribe.py [--checkpoint exp/demo/model.ckpt]
        [--inputs data/synthetic/test.jsonl] [--limit 100] [--rounds 3]
        [--lm lm.bin [--beam-widths 8 32 100] [--stock-only]] [--long-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
# Longer files are not also run in one pass (its memory grows with the length).
ONE_PASS_LIMIT = 600.0
sys.path.insert(0, str(ROOT))
from bench_decode import StockDecoder  # noqa: E402  (tools/ is on sys.path)
from bench_memory import child as run_asr  # noqa: E402

import asr.decoding  # noqa: E402
from asr.audio import load_audio  # noqa: E402
from asr.decoding import make_decoder, resolve_decoder_settings  # noqa: E402
from asr.inference import Recognizer, load_model  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import error_rates  # noqa: E402
from asr.text import normalize  # noqa: E402
from asr.transcribe import (  # noqa: E402
    Source,
    Transcriber,
    Transcript,
    collect_sources,
)


def timed(transcriber: Transcriber, sources: list[Source]) -> tuple[float, float]:
    """(wall seconds, audio seconds) of one transcription."""
    start = time.perf_counter()
    results = transcriber.transcribe(sources)
    wall = time.perf_counter() - start
    failed = [r for r in results if not isinstance(r, Transcript)]
    assert not failed, failed[:3]
    return wall, sum(r.duration for r in results)


def join_audio(sources: list[Source], seconds: float, rate: int, path: Path) -> None:
    """The sources' audio end to end (repeated if needed) up to ``seconds``."""
    parts, total = [], 0
    while total < seconds * rate:
        for s in sources:
            x = load_audio(s.path, rate, s.offset, s.duration).numpy()
            parts.append(x)
            total += len(x)
            if total >= seconds * rate:
                break
    sf.write(path, np.concatenate(parts)[: int(seconds * rate)], rate)


def child(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit status) of ``asr transcribe argv``."""
    wall, rss, status, err = run_asr(["transcribe", *argv])
    if status or rss != rss:  # failed, or no peak reported (NaN)
        print(err[-2000:], file=sys.stderr)
    return wall, rss, status


def beam_arms(
    rec: Recognizer, args: argparse.Namespace, beam: int
) -> dict[str, Transcriber]:
    """Ours (as ``asr transcribe --lm --beam-width`` builds it) and stock
    pyctcdecode with the same settings and workers, each in a fresh transcriber."""
    ours = make_decoder(rec.tokenizer.vocab, args.checkpoint, args.lm, beam_width=beam)
    settings = resolve_decoder_settings(args.checkpoint, args.lm, beam_width=beam)
    workers = ours.workers  # type: ignore[attr-defined]
    stock = StockDecoder(list(rec.tokenizer.vocab), workers=workers, **settings)
    return {
        name: Transcriber(rec, decoder, batch_seconds=args.batch_seconds)
        for name, decoder in (("ours", ours), ("pyctcdecode", stock))
    }


# One decoder built and one utterance decoded in a fresh process: argv is the arm,
# the checkpoint, the LM, the beam and an .npy of log-probs; prints the seconds.
_FIRST_DECODE = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
arm, ckpt, lm, beam, npy = sys.argv[2:]
from bench_decode import StockDecoder
from asr.decoding import build_decoder, resolve_decoder_settings
from asr.text import VOCAB
x = np.load(npy)
settings = resolve_decoder_settings(ckpt, lm, beam_width=int(beam))
start = time.perf_counter()
build = StockDecoder if arm == "pyctcdecode" else build_decoder
build(list(VOCAB), **settings).decode(x, 0.03)
print(time.perf_counter() - start)
"""


def first_decode(arm: str, args: argparse.Namespace, beam: int, npy: Path) -> float:
    """Seconds to build the decoder and decode one utterance in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_DECODE, str(ROOT / "tools"), arm,
         str(args.checkpoint), str(args.lm), str(beam), str(npy)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def versus_stock(
    rec: Recognizer,
    sources: list[Source],
    refs: list[str] | None,
    args: argparse.Namespace,
) -> None:
    """Table 4: ours vs stock pyctcdecode, end to end, at each beam."""
    print(
        "\n| beam | ours wall s | ours decoding s | ours WER % | pyctcdecode wall s "
        "| pyctcdecode decoding s | pyctcdecode WER % | same texts "
        "| wall pyctcdecode / ours |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = ("ours", "pyctcdecode")
    for beam in args.beam_widths:
        for t in beam_arms(rec, args, beam).values():  # warm-up
            timed(t, sources)
        walls: dict[str, list[float]] = {k: [] for k in names}
        decoding: dict[str, list[float]] = {k: [] for k in names}
        texts: dict[str, list[str]] = {}
        for r in range(args.rounds):
            arms = beam_arms(rec, args, beam)
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                results = arms[name].transcribe(sources)
                walls[name].append(time.perf_counter() - start)
                decoding[name].append(arms[name].stats["decode_seconds"])
                failed = [x for x in results if not isinstance(x, Transcript)]
                assert not failed, failed[:3]
                texts.setdefault(name, [x.text for x in results])  # type: ignore[union-attr]
        ratio = statistics.median(
            a / b for a, b in zip(walls["pyctcdecode"], walls["ours"], strict=True)
        )
        cells = [str(beam)]
        for name in names:
            wer = "n/a"
            if refs is not None:
                wer = f"{100 * error_rates(refs, texts[name])[0].rate:.2f}"
            cells += [
                f"{statistics.median(walls[name]):.2f}",
                f"{statistics.median(decoding[name]):.2f}",
                wer,
            ]
        same = sum(a == b for a, b in zip(*texts.values(), strict=True))
        cells += [f"{same}/{len(sources)}", f"{ratio:.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    # The first decode in a fresh process, on the longest utterance's log-probs.
    longest = max(sources, key=lambda s: s.duration or 0.0)
    wave = load_audio(longest.path, rec.sample_rate, longest.offset, longest.duration)
    lp, n = rec.log_probs(wave[None], torch.tensor([len(wave)]))  # (T, 1, V)
    npy = Path(tempfile.mkdtemp(prefix="bench_transcribe.")) / "lp.npy"
    np.save(npy, lp[: int(n[0]), 0].float().numpy())
    beam = args.beam_widths[0]
    print(
        f"\nFirst decode in a fresh process (decoder built, one utterance decoded, "
        f"beam {beam}): "
        + ", ".join(
            f"{arm} {first_decode(arm, args, beam, npy):.2f} s" for arm in names
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--checkpoint", default="exp/demo/model.ckpt")
    parser.add_argument("--inputs", nargs="+", default=["data/synthetic/test.jsonl"])
    parser.add_argument(
        "--limit", type=int, default=100, help="N files, spread evenly over the inputs"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--lm", help="KenLM model: adds a beam-search row, and ours vs pyctcdecode"
    )
    parser.add_argument(
        "--beam-widths",
        type=int,
        nargs="+",
        default=[8, 32, 100],
        help="beams of ours vs pyctcdecode",
    )
    parser.add_argument(
        "--stock-only",
        action="store_true",
        help="with --lm: only the table of ours vs pyctcdecode",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads with --stock-only (default 1, as asr transcribe)",
    )
    parser.add_argument("--long-seconds", type=float, default=300.0)
    parser.add_argument("--batch-seconds", type=float, default=300.0)
    args = parser.parse_args()
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # "only N unigrams"
    if args.stock_only and not args.lm:
        sys.exit("--stock-only compares beam searches: give --lm")

    sources, failures = collect_sources(args.inputs)
    if failures:
        sys.exit(f"cannot read the inputs: {failures[0]}")
    if args.limit < 1 or not sources:
        sys.exit("nothing to transcribe: --limit must be at least 1, inputs non-empty")
    # --limit files spread evenly over the inputs (a manifest is in speaker order)
    n = min(args.limit, len(sources))
    picked = [i * len(sources) // n for i in range(n)]
    sources = [sources[i] for i in picked]
    refs = None
    if len(args.inputs) == 1 and args.inputs[0].endswith(".jsonl"):
        refs = [normalize(read_manifest(args.inputs[0])[i].text) for i in picked]
    rec = load_model(args.checkpoint)
    if args.stock_only:
        torch.set_num_threads(args.threads)
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"{args.checkpoint}, {len(sources)} files of {args.inputs}"
        )
        versus_stock(rec, sources, refs, args)
        return
    greedy = Transcriber(
        rec, make_decoder(rec.tokenizer.vocab), batch_seconds=args.batch_seconds
    )
    default_threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, default intra-op threads "
        f"{default_threads}, load average {os.getloadavg()[0]:.2f}; "
        f"{args.checkpoint}, {len(sources)} files of {args.inputs}\n"
    )

    # 1. threads, alternated
    timed(greedy, sources)  # warm-up: page cache, allocator, one-time inits
    walls: dict[int, list[float]] = {1: [], 2: []}
    ratios = []
    audio = 0.0
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for n in order:
            torch.set_num_threads(n)
            wall, audio = timed(greedy, sources)
            walls[n].append(wall)
        ratios.append(walls[1][-1] / walls[2][-1])
    print("| intra-op threads | audio s | median wall s | RTF | x real time |")
    print("|---|---|---|---|---|")
    for n, w in walls.items():
        m = statistics.median(w)
        print(f"| {n} | {audio:.1f} | {m:.2f} | {m / audio:.4f} | {audio / m:.0f} |")
    ratio = statistics.median(ratios)
    best = 2 if ratio > 1.0 else 1
    print(
        f"\nwall(1 thread) / wall(2 threads): median {ratio:.2f} over "
        f"{args.rounds} alternating rounds -> {best} thread(s) is faster\n"
    )
    torch.set_num_threads(best)

    # 2. decoders and long audio, in process
    rows = []
    wall, audio = min(timed(greedy, sources) for _ in range(args.rounds))
    rows.append(("greedy", audio, wall, greedy.stats))
    have_beam = hasattr(asr.decoding, "BeamSearchDecoder")
    if args.lm and have_beam:
        beam = Transcriber(
            rec,
            make_decoder(rec.tokenizer.vocab, args.checkpoint, args.lm),
            batch_seconds=args.batch_seconds,
        )
        wall, audio = timed(beam, sources)
        rows.append((f"beam search + {Path(args.lm).name}", audio, wall, beam.stats))
    elif args.lm:
        print("(asr.decoding has no BeamSearchDecoder: no LM row)\n")
    tmp = Path(tempfile.mkdtemp(prefix="bench_transcribe."))
    long_path = tmp / "long.flac"
    if args.long_seconds > 0:
        join_audio(sources, args.long_seconds, rec.sample_rate, long_path)
        long = [Source(str(long_path), "long", "long")]
        passes = [("windows of 30 s", 30.0)]
        if args.long_seconds <= ONE_PASS_LIMIT:
            passes.append(("one pass", 1e9))
        for label, window in passes:
            t = Transcriber(
                rec,
                make_decoder(rec.tokenizer.vocab),
                batch_seconds=args.batch_seconds,
                window_seconds=window,
            )
            wall, audio = timed(t, long)
            rows.append(
                (f"{args.long_seconds:g} s file, {label}", audio, wall, t.stats)
            )
    print(
        f"| decoding ({best} thread(s)) | audio s | wall s | RTF | x real time "
        "| model s | decoding s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, audio, wall, stats in rows:
        print(
            f"| {label} | {audio:.1f} | {wall:.2f} | {wall / audio:.4f} "
            f"| {audio / wall:.0f} | {stats['model_seconds']:.2f} "
            f"| {stats['decode_seconds']:.2f} |"
        )

    # 3. the command, one process per row
    paths = [str(Path(a).resolve()) for a in args.inputs]
    common = ["--checkpoint", str(Path(args.checkpoint).resolve()), "--format", "json"]
    cli_rows = []
    if args.limit < 10**9 and len(args.inputs) == 1 and paths[0].endswith(".jsonl"):
        subset = tmp / "subset.jsonl"
        with open(paths[0]) as f, open(subset, "w") as out:
            base = Path(paths[0]).parent
            lines = [line for line in f if line.strip()]
            for i in picked:
                rec_ = json.loads(lines[i])
                rec_["audio_filepath"] = str(base / rec_["audio_filepath"])
                out.write(json.dumps(rec_) + "\n")
        paths = [str(subset)]
    out = str(tmp / "out.json")
    cli_rows.append(("greedy", [*paths, *common, "-o", out]))
    cli_rows.append(
        ("greedy, --threads 2", [*paths, *common, "-o", out, "--threads", "2"])
    )
    if args.lm and have_beam:
        cli_rows.append(
            ("beam search + LM", [*paths, *common, "-o", out, "--lm", args.lm])
        )
    if args.long_seconds > 0:
        long_args = [str(long_path), *common, "-o", out]
        cli_rows.append((f"{args.long_seconds:g} s file, windows", long_args))
        if args.long_seconds <= ONE_PASS_LIMIT:
            one_pass = [*long_args, "--window-seconds", "1e9"]
            cli_rows.append((f"{args.long_seconds:g} s file, one pass", one_pass))
    wall, rss, _ = child(["--help"])
    print("\n| `asr transcribe` process | wall s | peak RSS MiB |")
    print("|---|---|---|")
    print(f"| start-up only (`--help`: imports) | {wall:.2f} | {rss:.0f} |")
    failed = 0
    for label, argv in cli_rows:
        wall, rss, status = child(argv)
        note = "" if status == 0 else f" (exit {status})"
        failed += status != 0
        print(f"| {label}{note} | {wall:.2f} | {rss:.0f} |", flush=True)
    if failed:  # a row of a failed run measures nothing: say so in the exit status
        sys.exit(f"{failed} run(s) of asr transcribe failed (their errors above)")
    if args.lm and have_beam:
        versus_stock(rec, sources, refs, args)


if __name__ == "__main__":
    main()
