#!/usr/bin/env python
"""Benchmark our CTC loss against torch's native ``ctc_loss`` on the same inputs.

For each shape: forward + backward time of both, measured alternately in one process
after warm-up (the machine is shared and noisy, so we quote the median of the
per-round ratios), and the peak memory each allocates during one forward + backward
(on the CPU from the torch profiler's allocation events, so it counts exactly what the
two implementations allocate and nothing of the process around them; on CUDA from the
caching allocator's peak above what was allocated before the call).

On CUDA our loss replays its frame loop as a CUDA graph when a padded shape repeats
(asr/ctc/frames.py); ``--cuda-graph`` chooses the arms: ``on`` (the default
behaviour) or ``off`` (eager) against torch's, or ``both``: the main table with graphs
on, and a second table of graphs against eager, time and memory (a graph keeps its
shape's buffers between calls: they are counted in its memory). CPU runs are eager.

    python tools/bench_ctc.py [--rounds 9] [--device cpu] [--shapes 32x200x29 ...]
    python tools/bench_ctc.py --device cuda --cuda-graph both
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asr.ctc import ctc_loss  # noqa: E402
from asr.ctc.frames import GRAPHS  # noqa: E402

# (B, T, C): the shapes. Target lengths are about T/4.
SHAPES = [(32, 200, 29), (32, 400, 29), (32, 800, 29), (32, 400, 1000)]


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"32x200x29"`` -> ``(32, 200, 29)``: batch, frames, classes (blank included)."""
    try:
        B, T, C = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected BxTxC, three integers such as 32x200x29"
        ) from None
    if B < 1 or T < 4 or C < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: needs B >= 1, T >= 4 (targets are ~T/4) and C >= 2"
        )
    return B, T, C


def make_inputs(B: int, T: int, C: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, C, generator=g)
    log_probs = logits.log_softmax(-1).to(device)
    # Lengths vary within the batch like a length-bucketed batch of speech does.
    input_lengths = torch.randint(int(0.9 * T), T + 1, (B,), generator=g)
    input_lengths[0] = T
    target_lengths = torch.randint(int(0.8 * T / 4), T // 4 + 1, (B,), generator=g)
    targets = torch.randint(1, C, (B, T // 4), generator=g)
    return log_probs, targets.to(device), input_lengths, target_lengths


def fwd_bwd(loss_fn: Callable, inputs) -> None:
    log_probs, targets, input_lengths, target_lengths = inputs
    lp = log_probs.detach().requires_grad_()
    loss = loss_fn(lp, targets, input_lengths, target_lengths, reduction="mean")
    loss.backward()


def timed(loss_fn: Callable, inputs, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fwd_bwd(loss_fn, inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_bytes(loss_fn: Callable, inputs, device: str) -> int:
    """Peak of bytes allocated (and not yet freed) during one forward + backward."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(loss_fn, inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd_bwd(loss_fn, inputs)
    events = prof.profiler.kineto_results.events()
    allocs = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in allocs:
        current += nbytes
        peak = max(peak, current)
    return peak


def ours(graphs: bool) -> Callable:
    """Our loss with the CUDA-graph path on or off."""

    def loss_fn(*args, **kwargs):
        GRAPHS.enabled = graphs
        return ctc_loss(*args, **kwargs)

    return loss_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cuda-graph",
        choices=["on", "off", "both"],
        default="on",
        help="on CUDA: our loss with graphs on, off, or both (a second table); "
        "ignored on the CPU",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=SHAPES,
        metavar="BxTxC",
        help="batch x frames x classes (default: the issue's four shapes)",
    )
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    graphs = cuda and args.cuda_graph != "off"
    compare_graphs = cuda and args.cuda_graph == "both"
    warmup = max(args.warmup, 2) if graphs else args.warmup  # 2nd call captures

    print(
        f"torch {torch.__version__}, device {args.device}, "
        f"{torch.get_num_threads()} intra-op threads, float32, forward+backward, "
        f"median of {args.rounds} alternating rounds"
        + (f", CUDA graphs {'on' if graphs else 'off'}" if cuda else "")
        + "\n"
    )
    header = (
        "| B | T | C | S (≈T/4) | ours ms | native ms | time ratio | ours peak MB "
        "| native peak MB | memory ratio |"
    )
    print(header)
    print("|---" * 10 + "|")
    worst_time = worst_mem = 0.0
    arms = {"ours": ours(graphs), "native": F.ctc_loss}
    if compare_graphs:
        arms["eager"] = ours(False)
    graph_rows = []
    for B, T, C in args.shapes:
        inputs = make_inputs(B, T, C, args.device)
        GRAPHS.clear()
        for _ in range(warmup):
            for fn in arms.values():
                fwd_bwd(fn, inputs)
        times: dict[str, list[float]] = {name: [] for name in arms}
        for r in range(args.rounds):
            # Rotate which goes first so that none always meets a warm cache.
            names = list(arms)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                times[name].append(timed(arms[name], inputs, args.device))
        ratios = [a / b for a, b in zip(times["ours"], times["native"], strict=True)]
        held = GRAPHS.nbytes if graphs else 0  # a graph's buffers stay between calls
        mem_ours = peak_bytes(arms["ours"], inputs, args.device) + held
        mem_native = peak_bytes(F.ctc_loss, inputs, args.device)
        ratio = statistics.median(ratios)
        mem_ratio = mem_ours / mem_native
        worst_time, worst_mem = max(worst_time, ratio), max(worst_mem, mem_ratio)
        print(
            f"| {B} | {T} | {C} | {T // 4} "
            f"| {1e3 * statistics.median(times['ours']):.1f} "
            f"| {1e3 * statistics.median(times['native']):.1f} | {ratio:.2f} "
            f"| {mem_ours / 2**20:.1f} | {mem_native / 2**20:.1f} | {mem_ratio:.2f} |",
            flush=True,
        )
        if compare_graphs:
            graph_ratio = statistics.median(
                a / b for a, b in zip(times["ours"], times["eager"], strict=True)
            )
            mem_eager = peak_bytes(arms["eager"], inputs, args.device)
            graph_rows.append(
                f"| {B} | {T} | {C} "
                f"| {1e3 * statistics.median(times['eager']):.1f} "
                f"| {1e3 * statistics.median(times['ours']):.1f} | {graph_ratio:.2f} "
                f"| {mem_eager / 2**20:.1f} | {mem_ours / 2**20:.1f} "
                f"| {held / 2**20:.1f} | {mem_ours / mem_eager:.2f} |"
            )
    GRAPHS.enabled = True
    print(
        f"\nworst time ratio {worst_time:.2f}, worst memory ratio {worst_mem:.2f} "
        "(target: both <= 1.00)"
    )
    if graph_rows:
        print(
            "\nCUDA graph against eager (ours both ways; graph memory includes the "
            "buffers it keeps)\n"
        )
        print(
            "| B | T | C | eager ms | graph ms | time ratio | eager peak MB "
            "| graph peak MB | held MB | memory ratio |"
        )
        print("|---" * 10 + "|")
        print("\n".join(graph_rows))


if __name__ == "__main__":
    main()
