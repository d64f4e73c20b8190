#!/usr/bin/env python
"""Benchmark asr.gru against torch.nn.GRU on the CPU, and a whole training step.

Two comparisons, each timed A/B alternately in one process (the machine is shared
and noisy), reporting medians and the median of the per-round ratios:

1. one bidirectional GRU layer, forward + backward, at the demo model's shape
   (T frames x B utterances, 512 inputs, 256 units): torch's nn.GRU on a packed
   batch (what DeepSpeech2 implementations run) against ``asr.gru.gru_layer``, in
   float32 and under bfloat16 autocast;
2. a training step of the demo model (conf/synthetic/demo.yaml: frontend, two
   convolutions, three GRU layers, CTC, AdamW) on random speech-length batches, with
   the model's GRU layers through nn.GRU or asr.gru, float32 and bf16-mixed.

Usage: python tools/bench_rnn.py [--rounds 7] [--threads 2] [--config FILE]
    [--batches 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.gru import gru_layer  # noqa: E402
from asr.task import ASRTask  # noqa: E402
from asr.train import keep_freed_memory  # noqa: E402


def alternate(
    fns: dict[str, Callable[[], None]], rounds: int
) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


Row = tuple[str, float, float, float]  # what, ours ms, torch ms, ratio


def row(what: str, times: dict[str, list[float]], a: str, b: str) -> Row:
    """Medians of ``a`` and ``b`` in ms and the median of their per-round ratios."""
    ratio = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    return (
        what,
        statistics.median(times[a]) * 1e3,
        statistics.median(times[b]) * 1e3,
        ratio,
    )


def bench_layer(
    rounds: int, T: int = 60, B: int = 32
) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    rnn = torch.nn.GRU(512, 256, bidirectional=True)
    x = torch.randn(T, B, 512, requires_grad=True)
    lens = torch.randint(T * 3 // 4, T + 1, (B,))
    lens[0] = T
    mask = (torch.arange(T)[:, None] < lens)[:, :, None]

    def torch_gru(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            packed = pack_padded_sequence(x, lens, enforce_sorted=False)
            out, _ = rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=T)
        (out.float() * mask).sum().backward()

    def ours(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = gru_layer(rnn, x, lens)
        (out.float() * mask).sum().backward()

    times = alternate(
        {
            "torch fp32": lambda: torch_gru(False),
            "ours fp32": lambda: ours(False),
            "torch bf16": lambda: torch_gru(True),
            "ours bf16": lambda: ours(True),
        },
        rounds,
    )
    return [
        row(
            f"GRU layer fwd+bwd, {p} (T={T}, B={B}, 512->2x256)",
            times,
            f"ours {p}",
            f"torch {p}",
        )
        for p in ("fp32", "bf16")
    ]


def bench_step(config: Path, rounds: int, batches: int = 4) -> list[Row]:
    cfg = yaml.safe_load(config.read_text())["model"]
    torch.manual_seed(0)
    task = ASRTask(**cfg).train()
    optimizer = torch.optim.AdamW(task.parameters(), 1e-4)
    rate = task.hparams.sample_rate
    data = []
    for _ in range(batches):  # 26 utterances of 1.5-3 s: ~60 s, like a demo batch
        lens = torch.randint(int(1.5 * rate), 3 * rate, (26,))
        waves = torch.randn(26, int(lens.max())) * 0.1
        targets = torch.randint(1, 29, (26, 30))
        data.append((waves, lens, targets, torch.full((26,), 30)))
    audio = sum(float(d[1].sum()) for d in data) / rate

    def step(fast: bool, bf16: bool) -> None:
        task.model.fast_gru = fast
        for waves, lens, targets, target_lens in data:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                log_probs, out_lens = task(waves, lens)
            loss = task.ctc_loss(
                log_probs.float(), targets, out_lens, target_lens, blank=0
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    times = alternate(
        {
            "torch fp32": lambda: step(False, False),
            "ours fp32": lambda: step(True, False),
            "torch bf16": lambda: step(False, True),
            "ours bf16": lambda: step(True, True),
        },
        rounds,
    )
    rows = []
    for a, b in (
        ("ours fp32", "torch fp32"),
        ("ours bf16", "torch bf16"),
        ("ours bf16", "torch fp32"),
    ):
        speed_a = audio / statistics.median(times[a])
        speed_b = audio / statistics.median(times[b])
        what = f"training step, {a} vs {b} (xRT {speed_a:.0f} vs {speed_b:.0f})"
        rows.append(row(what, times, a, b))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--config", type=Path, default=ROOT / "conf" / "synthetic" / "demo.yaml"
    )
    parser.add_argument(
        "--batches", type=int, default=4, help="~60 s batches per timed training run"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `asr train` does
    rows = bench_layer(args.rounds) + bench_step(args.config, args.rounds, args.batches)
    print(
        f"threads: {args.threads}, rounds: {args.rounds} "
        "(medians; ratio < 1: ours faster)"
    )
    print(f"| {'what':<90} | ours ms | torch ms | ratio |")
    print(f"|{'-' * 92}|--------:|---------:|------:|")
    for what, ours, theirs, r in rows:
        print(f"| {what:<90} | {ours:7.1f} | {theirs:8.1f} | {r:5.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
