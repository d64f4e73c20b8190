#!/usr/bin/env python
"""Training throughput by batch sampler settings: the length jitter of shuffled epochs.

``asr.data.DurationBatchSampler`` sorts each shuffled epoch by duration jittered by
up to ``jitter`` (relative), packs batches of at most 60 s of padded audio and 32
utterances, then shuffles the batches. The jitter varies batch composition between
epochs and costs padding. This runs training steps of the demo model
(conf/synthetic/demo.yaml: frontend, two convolutions, three GRU layers, CTC,
AdamW; bf16-mixed where the CPU has bfloat16, else float32) on the batch shapes of
the manifest's utterances (random waveforms of the real lengths), in one process
on the allocator ``asr train`` uses, for three epochs' worth of batches:

- ``jitter 0.10``: the former default (shuffled epochs);
- ``jitter 0.01``: the default (shuffled epochs);
- ``sorted``: the first epoch under SortaGrad (shortest batch first, no jitter),
  timed in runs of consecutive batches from evenly spaced places in the epoch, so
  that it covers all lengths while each batch is shaped like the one before.

With ``--sizes 60x32,30x16,...`` the arms are batch sizes instead (at most S
seconds of padded audio and N utterances, shuffled epochs, jitter 0.01), compared
against the first one listed.

The arms take turns, a chunk of steps each, in rotated order each round (the
machine is shared and noisy). The table gives each arm's padding (padded over real
audio), batches per epoch, and its speed in seconds of real audio per second; the
ratios are medians of the per-round ratios against the first arm (``jitter 0.10``).
With ``--sizes``, where batches differ in size, each arm's chunk is ``--chunk``
times 60 s of audio instead of ``--chunk`` steps.

Usage: python tools/bench_sampler.py [--manifest data/synthetic/train.jsonl]
       [--rounds 6] [--chunk 20] [--threads N] [--sizes 60x32,30x16,120x64]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 16000


class Arm(NamedTuple):
    seconds: float  # at most this much padded audio per batch
    count: int  # and at most this many utterances
    jitter: float
    sorted_first: bool  # SortaGrad's sorted first epoch, not a shuffled one


ARMS: dict[str, Arm] = {
    "jitter 0.10": Arm(60.0, 32, 0.1, False),
    "jitter 0.01": Arm(60.0, 32, 0.01, False),
    "sorted": Arm(60.0, 32, 0.01, True),
}


def size_arms(spec: str) -> dict[str, Arm]:
    """``"60x32,30x16"`` -> arms of those batch sizes (seconds x utterances)."""
    arms = {}
    for item in spec.split(","):
        text, _, utterances = item.strip().partition("x")
        try:
            seconds, count = float(text), int(utterances)
        except ValueError:
            seconds, count = 0.0, 0
        if seconds <= 0 or count <= 0:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} is not SECONDSxUTTERANCES, e.g. 60x32"
            )
        arms[f"{seconds:g} s / {count}"] = Arm(seconds, count, 0.01, False)
    return arms


def durations_of(manifest: str | None, seed: int) -> list[float]:
    """The manifest's durations, or 15,000 log-normal ones like the demo corpus's
    (median 2.2 s) when there is none."""
    if manifest and Path(manifest).is_file():
        with open(manifest) as f:
            return [float(json.loads(line)["duration"]) for line in f if line.strip()]
    rng = random.Random(seed)
    return [round(min(15.0, rng.lognormvariate(0.8, 0.45)), 3) for _ in range(15000)]


def arm_batches(arm: Arm, durations: list[float], seed: int) -> list[list[int]]:
    """One epoch of batches (utterance indices) as the arm makes them."""
    from asr.data import DurationBatchSampler

    sampler = DurationBatchSampler(
        durations, arm.seconds, arm.count, seed=seed, jitter=arm.jitter
    )
    sampler.set_epoch(0 if arm.sorted_first else 1)
    return [[i for i, _ in b] for b in sampler]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ROOT / "data/synthetic/train.jsonl"
    p.add_argument("--manifest", default=str(default) if default.is_file() else None)
    p.add_argument("--config", default=str(ROOT / "conf/synthetic/demo.yaml"))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--chunk", type=int, default=20, help="steps per arm and round")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        type=size_arms,
        default=None,
        help="batch-size arms, e.g. 60x32,30x16 (seconds x utterances)",
    )
    args = p.parse_args()
    arms = args.sizes or ARMS
    names = list(arms)

    from asr.malloc import use_tcmalloc

    use_tcmalloc()  # as `asr train` runs (re-executes this script once)

    import torch
    from bench_alloc import DemoTraining  # this script's directory

    from asr.malloc import allocator
    from asr.train import keep_freed_memory

    keep_freed_memory()  # as `asr train` does (a no-op on tcmalloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    durations = durations_of(args.manifest, args.seed)
    real = sum(durations)
    epochs = {name: arm_batches(arms[name], durations, args.seed) for name in names}
    training = DemoTraining(args.config, args.seed)
    bf16 = training.bf16
    gen = torch.Generator().manual_seed(args.seed)

    def step(batch: list[int]) -> float:
        lens = [int(SAMPLE_RATE * durations[i]) for i in batch]
        waves = torch.randn(len(lens), max(lens), generator=gen) * 0.1
        wave_lens = torch.tensor(lens)

        def targets_for(out_lens):
            # ~15 characters per second of speech, as the synthetic speakers say
            target_lens = torch.minimum(wave_lens * 15 // SAMPLE_RATE, out_lens // 2)
            target_lens = target_lens.clamp(min=1)
            shape = (len(lens), int(target_lens.max()))
            return torch.randint(1, 29, shape, generator=gen), target_lens

        training.step(waves, wave_lens, targets_for)
        return sum(lens) / SAMPLE_RATE

    print(
        f"{len(durations)} utterances, {real / 3600:.2f} h "
        f"({args.manifest or 'log-normal durations'}); {allocator()}, "
        f"{'bf16-mixed' if bf16 else 'float32'}, {torch.get_num_threads()} threads",
        flush=True,
    )
    for name in names:  # warm-up, not timed
        for batch in epochs[name][: 5 if name == names[0] else 1]:
            step(batch)
    cursor = dict.fromkeys(names, 0)
    audio = {arm: 0.0 for arm in names}
    wall = {arm: 0.0 for arm in names}
    speeds: dict[str, list[float]] = {arm: [] for arm in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for arm in order:
            batches = epochs[arm]
            if arms[arm].sorted_first:  # consecutive batches from evenly spaced places
                cursor[arm] = r * len(batches) // args.rounds
            seconds, steps = 0.0, 0
            t0 = time.perf_counter()
            # --sizes: the same audio per arm (batches differ in size), else steps
            while (seconds < 60.0 * args.chunk) if args.sizes else (steps < args.chunk):
                seconds += step(batches[cursor[arm] % len(batches)])
                cursor[arm] += 1
                steps += 1
            dt = time.perf_counter() - t0
            audio[arm] += seconds
            wall[arm] += dt
            speeds[arm].append(seconds / dt)
        print(
            f"round {r + 1}: " + ", ".join(f"{a} {speeds[a][-1]:.0f}x" for a in names),
            flush=True,
        )
    chunk = f"{60 * args.chunk} s of audio" if args.sizes else f"{args.chunk} steps"
    print(f"\n{args.rounds} rounds of {chunk} per arm\n")
    print(f"| batches | padded / real | per epoch | real time | vs {names[0]} |")
    print("|---|---:|---:|---:|---:|")
    for arm in names:
        batches = epochs[arm]
        padded = sum(len(b) * max(durations[i] for i in b) for b in batches)
        ratio = statistics.median(
            a / b for a, b in zip(speeds[arm], speeds[names[0]], strict=True)
        )
        print(
            f"| {arm} | {padded / real:.3f} | {len(batches)} | "
            f"{audio[arm] / wall[arm]:.0f}x | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
