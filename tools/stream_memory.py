"""Memory of one long stream: an hour of speech through one ``asr.streaming.Session``.

The audio (speech files, looped, with a second of faint noise after each so that
segments end) goes through a session in chunks; every few minutes of stream time
the process's resident memory (RSS), the stream state's bytes and the open
segment's frames are printed, then the growth of RSS from the first report of the
run to its last, the state's range, and the compute time per chunk. A stream whose
memory does not grow shows a flat RSS and a constant state.

    python tools/stream_memory.py --checkpoint exp/streaming/model.ckpt \\
        --audio data/synthetic/corpus/test/.../*.flac --hours 1 --chunk-ms 1000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    """Resident set size now, MiB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--audio", nargs="+", required=True, help="speech files to loop")
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--chunk-ms", type=float, default=1000.0)
    p.add_argument("--every-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from asr.audio import load_audio
    from asr.streaming import Session, StreamingModel

    torch.set_num_threads(args.threads)
    model = StreamingModel.load(args.checkpoint)
    rate = model.sample_rate
    noise = np.random.default_rng(0).normal(0, 3e-4, rate).astype(np.float32)
    audio = np.concatenate(
        [x for f in args.audio for x in (load_audio(f, rate).numpy(), noise)]
    )
    chunk = max(1, round(args.chunk_ms * rate / 1000))
    total = round(args.hours * 3600 * rate)
    every = round(args.every_minutes * 60 * rate)
    session = Session(model)
    print(
        f"{args.checkpoint}: {args.hours:g} h of {len(audio) / rate:.1f} s of speech "
        f"looped, {args.chunk_ms:g} ms chunks, {args.threads} thread(s)"
    )
    print(f"{'stream min':>10} {'RSS MiB':>8} {'state B':>8} {'segment frames':>14} "
          f"{'finals':>6} {'x real time':>11}")  # fmt: skip
    rows: list[tuple[float, float, int]] = []
    sent = finals = 0
    took: list[float] = []  # seconds of compute per chunk (model and decoding)
    next_report = every
    start = time.perf_counter()
    while sent < total:
        i = sent % len(audio)
        piece = audio[i : i + chunk]
        if len(piece) < chunk:
            piece = np.concatenate([piece, audio[: chunk - len(piece)]])
        sent += len(piece)
        t0 = time.perf_counter()
        finals += sum(e["type"] == "final" for e in session.accept(piece))
        took.append(time.perf_counter() - t0)
        if sent >= next_report or sent >= total:
            next_report += every
            state = session.state.nbytes()
            rss = rss_mib()
            speed = sent / rate / (time.perf_counter() - start)
            rows.append((sent / rate / 60, rss, state))
            print(
                f"{sent / rate / 60:10.1f} {rss:8.1f} {state:8d} "
                f"{len(session._lp):14d} {finals:6d} {speed:11.0f}",
                flush=True,
            )
    session.finish()
    first, last = rows[0], rows[-1]
    states = [r[2] for r in rows]
    peak = max(r[1] for r in rows)
    print(
        f"RSS {first[1]:.1f} MiB at {first[0]:.0f} min, {last[1]:.1f} MiB at "
        f"{last[0]:.0f} min: {last[1] - first[1]:+.1f} MiB; max {peak:.1f} MiB; "
        f"stream state {min(states)}-{max(states)} bytes"
    )
    ms = 1000 * np.array(took)
    print(
        f"compute per {args.chunk_ms:g} ms chunk: median {np.median(ms):.2f} ms, "
        f"p95 {np.percentile(ms, 95):.2f} ms, max {ms.max():.1f} ms "
        f"({len(ms)} chunks); algorithmic latency "
        f"{1000 * model.latency_seconds:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
