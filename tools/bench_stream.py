#!/usr/bin/env python
"""Benchmark ``asr serve``'s WebSocket streams: how many real-time streams the
machine holds, with batch dispatch and without.

For each number of streams N (``--streams``, default 1 8 32 64 128) and each arm
(batch dispatch on, then off: ``asr serve --no-batch``), a fresh ``asr serve``
child process is started on 127.0.0.1, and N WebSocket clients (one asyncio loop in
this process) each send ``--seconds`` of test-set audio (utterances of the
manifest joined end to end, each stream starting at another utterance) in frames
of ``--chunk-ms``, at real-time pace on an absolute schedule, then the end message,
and wait for their finals. Clients start spread over one chunk, as real ones would.

Reported for each row:

- latency p50 / p95 / max (ms): from a chunk's arrival at the server to the end of
  the model step that took it, when its partial is queued to the client (the
  server's own statistics, ``GET /health``); the algorithmic delay (the chunk's
  own length and the model's lookahead, ``latency`` in /health) comes on top and
  is the same for every row;
- kept up: streams whose close (every final sent) came within ``--keep-up`` seconds
  (default 1) of their end message, out of N; and the client's own pacing (a
  client more than one chunk late in sending is counted as not keeping up too: the
  load generator shares the cores);
- CPU: the server's CPU seconds (user + system) over the run's wall seconds, in
  cores; per stream: CPU seconds per second of audio per stream, the cost that
  batch dispatch lowers;
- RSS: the server's peak resident memory (sampled every 100 ms), and mean batch:
  streams per model step;
- client cores: this process's CPU over the run (the load generator's share of
  the same cores).

The arms alternate at each N (batch, no batch, batch, ...) for ``--rounds``
rounds, and the ratio quoted is the median over rounds of the CPU per stream
without batch dispatch over that with it. The machine is shared: say so with the
table. ``--random-config conf/synthetic/streaming.yaml`` builds a checkpoint of
that configuration's model with random weights (global feature statistics fitted
on a few test utterances) through the package's own save path: the cost per chunk
does not depend on the weights.

    python tools/bench_stream.py --checkpoint exp/streaming/model.ckpt
        [--manifest data/synthetic/test.jsonl] [--streams 1 8 32 64 128]
        [--seconds 20] [--chunk-ms 100] [--rounds 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE = 16000


def stream_audio(manifest: Path, n: int, seconds: float, limit: int) -> list[bytes]:
    """``n`` streams of ``seconds`` of s16le audio each: the manifest's first
    ``limit`` utterances joined end to end, stream ``i`` starting at utterance
    ``i`` (mod the count)."""
    from asr.audio import load_audio
    from asr.manifest import read_manifest

    utts = read_manifest(manifest)[:limit]
    if not utts:
        raise SystemExit(f"{manifest}: no utterances")
    waves = [load_audio(u.audio_filepath, RATE).numpy() for u in utts]
    want = int(seconds * RATE)
    out = []
    for i in range(n):
        parts, have, j = [], 0, i
        while have < want:
            w = waves[j % len(waves)]
            parts.append(w)
            have += len(w)
            j += 1
        pcm = np.concatenate(parts)[:want]
        out.append((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return out


def random_checkpoint(config: Path, manifest: Path, out: Path) -> Path:
    """A checkpoint of ``config``'s model (its ``model:`` section: the
    ``asr.task.ASRTask`` arguments) with random weights and global statistics
    fitted on a few of ``manifest``'s utterances."""
    import torch
    import yaml

    from asr.configs import config_bases
    from asr.inference import save_model
    from asr.manifest import read_manifest
    from asr.task import ASRTask

    # The config and its bases (``# base: FILE``), later keys over earlier ones
    # as LightningCLI reads them: model.model and model.frontend replaced whole.
    args: dict = {}
    for path in config_bases(config):
        with open(path) as f:
            args.update((yaml.safe_load(f) or {}).get("model", {}))
    torch.manual_seed(0)
    task = ASRTask(
        **{k: v for k, v in args.items() if k in ("model_preset", "model", "frontend")}
    )
    if task.frontend.normalize == "global":
        task.fit_global_stats(read_manifest(manifest)[:20])
    task.eval()
    return save_model(task, out)


# -- the server ------------------------------------------------------------------


class Server:
    """``asr serve`` in a child process, its CPU and peak RSS."""

    def __init__(self, checkpoint: Path, n: int, batch: bool, threads: int) -> None:
        cmd = [
            sys.executable, "-m", "asr", "serve", "--checkpoint", str(checkpoint),
            "--port", "0", "--max-streams", str(max(n, 1)),
            "--threads", str(threads), "--idle-timeout", "60",
        ]  # fmt: skip
        if not batch:
            cmd.append("--no-batch")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stderr is not None
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line):
                self.port = int(m.group(1))
                break
        else:
            raise SystemExit("asr serve did not start:\n" + "".join(lines))
        self.log = lines
        threading.Thread(
            target=lines.extend, args=(self.proc.stderr,), daemon=True
        ).start()
        self.peak_rss = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self._sampling:
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.1)

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self._sampling = False
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the clients ------------------------------------------------------------------


async def client(
    url: str, pcm: bytes, chunk: int, delay: float, keep_up: float
) -> dict:
    """One stream at real-time pace; whether it kept up."""
    import websockets

    await asyncio.sleep(delay)
    frame = 2 * chunk
    late = 0.0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"sample_rate": RATE, "format": "s16le"}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            return {"ok": False, "error": ready}
        finals = []

        async def receive() -> None:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "final":
                    finals.append(event["text"])
                elif event["type"] == "error":
                    raise RuntimeError(event)

        reader = asyncio.create_task(receive())
        start = time.perf_counter()
        for k, i in enumerate(range(0, len(pcm), frame)):
            due = start + k * chunk / RATE
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late = max(late, now - due)
            await ws.send(pcm[i : i + frame])
        ended = time.perf_counter()
        await ws.send(json.dumps({"type": "end"}))
        try:
            await reader
        except Exception as err:
            return {"ok": False, "error": repr(err)}
        finish = time.perf_counter() - ended
        code = ws.close_code
    return {
        "ok": code == 1000 and finish <= keep_up and late <= chunk / RATE,
        "finish": finish,
        "late": late,
        "code": code,
        "words": sum(len(t.split()) for t in finals),
    }


async def load(url: str, streams: list[bytes], chunk: int, keep_up: float) -> list:
    rng = random.Random(0)
    tasks = [
        client(url, pcm, chunk, rng.uniform(0, chunk / RATE), keep_up)
        for pcm in streams
    ]
    return await asyncio.gather(*tasks, return_exceptions=True)


def measure(
    checkpoint: Path,
    streams: list[bytes],
    chunk: int,
    batch: bool,
    threads: int,
    keep_up: float,
) -> dict:
    n = len(streams)
    server = Server(checkpoint, n, batch, threads)
    try:
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        own0 = time.process_time()
        results = asyncio.run(load(f"ws://127.0.0.1:{server.port}/stream", streams,
                                   chunk, keep_up))  # fmt: skip
        wall = time.perf_counter() - t0
        cpu = server.cpu_seconds() - cpu0
        own = time.process_time() - own0
        health = server.health()
    finally:
        server.stop()
    failed = [r for r in results if not isinstance(r, dict) or "finish" not in r]
    if failed:
        raise SystemExit(f"{len(failed)} of {n} streams failed, e.g. {failed[0]!r}")
    audio = sum(len(s) for s in streams) / 2 / RATE
    d = health["dispatch"]
    lat = d["latency_ms"]
    return {
        "n": n,
        "batch": batch,
        "p50": lat.get("p50", float("nan")),
        "p95": lat.get("p95", float("nan")),
        "max": lat.get("max", float("nan")),
        "kept": sum(r["ok"] for r in results),
        "finish_max": max(r["finish"] for r in results),
        "late_max": max(r["late"] for r in results),
        "cores": cpu / wall,
        "client_cores": own / wall,
        "cpu_per_stream": cpu / audio,  # CPU seconds per second of audio
        "rss_mb": server.peak_rss / 2**20,
        "mean_batch": d["mean_batch"],
        "algorithmic": health["latency"],
        "words": sum(r["words"] for r in results),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument(
        "--random-config",
        type=Path,
        help="build a random-weights checkpoint of this config's model instead",
    )
    p.add_argument("--manifest", type=Path, default=ROOT / "data/synthetic/test.jsonl")
    p.add_argument("--limit", type=int, default=200, help="utterances to use")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    p.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="asr serve --threads")
    p.add_argument("--keep-up", type=float, default=1.0)
    p.add_argument("--no-peer", action="store_true", help="batch dispatch only")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    args = p.parse_args()
    if (args.checkpoint is None) == (args.random_config is None):
        p.error("give --checkpoint or --random-config")
    chunk = args.chunk_ms * RATE // 1000
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        what = str(checkpoint)
        if checkpoint is None:
            checkpoint = random_checkpoint(
                args.random_config, args.manifest, Path(tmp) / "random.ckpt"
            )
            what = f"random weights of {args.random_config}"
        audio = stream_audio(args.manifest, max(args.streams), args.seconds, args.limit)
        arms = [True] if args.no_peer else [True, False]
        rows: dict[tuple[int, bool], list[dict]] = {}
        for n in args.streams:
            for _ in range(args.rounds):
                for batch in arms:
                    r = measure(
                        checkpoint, audio[:n], chunk, batch, args.threads, args.keep_up
                    )
                    rows.setdefault((n, batch), []).append(r)
                    print(
                        f"N={n} batch={batch}: p95 {r['p95']} ms, kept up "
                        f"{r['kept']}/{n}, {r['cores']:.2f} cores",
                        file=sys.stderr,
                        flush=True,
                    )
    report(rows, args, what, arms)
    if args.json:
        args.json.write_text(json.dumps([r for rs in rows.values() for r in rs]))
    return 0


def report(rows: dict, args: argparse.Namespace, what: str, arms: list[bool]) -> None:
    first = next(iter(rows.values()))[0]
    print(
        f"model: {what}; algorithmic latency {first['algorithmic']} s (lookahead "
        f"and window); chunks of {args.chunk_ms} ms; {args.seconds:g} s of audio "
        f"per stream; asr serve --threads {args.threads}; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), shared with other work\n"
    )
    print(
        "| streams | dispatch | p50 ms | p95 ms | max ms | kept up | server cores "
        "| CPU s per audio s | mean batch | peak RSS MB | client cores |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.streams:
        for batch in arms:
            rs = rows[(n, batch)]
            med = {
                k: statistics.median(r[k] for r in rs)
                for k in ("p50", "p95", "max", "cores", "client_cores",
                          "cpu_per_stream", "rss_mb", "mean_batch")
            }  # fmt: skip
            kept = min(r["kept"] for r in rs)
            print(
                f"| {n} | {'batch' if batch else 'one by one'} | {med['p50']:.1f} "
                f"| {med['p95']:.1f} | {med['max']:.1f} | {kept}/{n} "
                f"| {med['cores']:.2f} | {med['cpu_per_stream']:.4f} "
                f"| {med['mean_batch']:.1f} | {med['rss_mb']:.0f} "
                f"| {med['client_cores']:.2f} |"
            )
    if len(arms) == 2:
        print()
        for n in args.streams:
            ratios = [
                off["cpu_per_stream"] / on["cpu_per_stream"]
                for on, off in zip(rows[(n, True)], rows[(n, False)], strict=True)
            ]
            print(
                f"N={n}: CPU per stream one by one / batch = "
                f"{statistics.median(ratios):.2f} (median of {len(ratios)})"
            )


if __name__ == "__main__":
    raise SystemExit(main())
