#!/usr/bin/env python
"""Benchmark a training step of the OCR model (conf/ocr/*.yaml) with our CTC loss
against torch's native ctc_loss (``model.ctc_impl: asr`` / ``torch``).

The two arms are the same model (same initial weights), the same batches (CAPTCHAs
or text lines from the data set's manifest, or random images of its shape) and the
same optimizer; each round times one step of each, alternately, in one process (the
machine is shared and noisy), and the table reports the medians and the median of
the per-round ratios. Optionally also the same step at 1 and 2 torch threads (under
contention, 2 threads that wait for each other can be slower than 1).

Usage: python tools/bench_ocr.py [--config conf/ocr/captcha.yaml] [--rounds 15]
    [--threads 1] [--compare-threads] [--manifest M]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.ocr.task import OCRTask, collate, load_images, make_tokenizer  # noqa: E402


def make_task(cfg: dict, impl: str) -> OCRTask:
    torch.manual_seed(0)
    data, model = cfg["data"], cfg.get("model", {})
    return OCRTask(
        data["alphabet"],
        data["height"],
        data.get("width"),
        model.get("model"),
        lr=model.get("lr", 3e-3),
        ctc_impl=impl,
    )


def batches(cfg: dict, manifest: str | None, n: int) -> list:
    data = cfg["data"]
    bs = data["batch_size"]
    if manifest:
        images = load_images(
            manifest, make_tokenizer(data["alphabet"]), data["height"], data["width"]
        )
        items = [images[i] for i in range(min(len(images), n * bs))]
    else:
        g = torch.Generator().manual_seed(0)
        width = data.get("width") or 256
        items = [
            (
                torch.randint(0, 255, (data["height"], width), generator=g)
                .to(torch.uint8)
                .numpy(),
                torch.randint(1, len(data["alphabet"]) + 1, (5,), generator=g).tolist(),
                "",
            )
            for _ in range(n * bs)
        ]
    return [collate(items[i : i + bs]) for i in range(0, len(items) - bs + 1, bs)]


def step_fn(task: OCRTask, data: list):
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    task.train()
    state = {"i": 0}

    def step() -> None:
        batch = data[state["i"] % len(data)]
        state["i"] += 1
        loss, _, _ = task._loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def alternate(fns: dict, rounds: int, threads: dict[str, int]) -> dict:
    times = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up
        torch.set_num_threads(threads[name])
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            torch.set_num_threads(threads[name])
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict, a: str, b: str) -> None:
    ratio = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    print(f"\n{title}")
    print("| arm | median ms/step | rounds |\n|---|---:|---:|")
    for name in (a, b):
        ms = 1000 * statistics.median(times[name])
        print(f"| {name} | {ms:.1f} | {len(times[name])} |")
    print(f"| **{a} / {b}** (median of per-round ratios) | **{ratio:.3f}** | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="conf/ocr/captcha.yaml")
    ap.add_argument("--manifest", help="real images (default: the config's dev set)")
    ap.add_argument("--random", action="store_true", help="random images instead")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare-threads", action="store_true")
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / args.config).read_text())
    manifest = None if args.random else (args.manifest or cfg["data"]["val_manifest"])
    if manifest and not Path(manifest).is_file():
        manifest = None
    data = batches(cfg, manifest, args.batches)
    shape = tuple(data[0].images.shape)
    print(f"{args.config}: batches of {shape} from {manifest or 'random images'}")
    fns = {impl: step_fn(make_task(cfg, impl), data) for impl in ("asr", "torch")}
    times = alternate(fns, args.rounds, {"asr": args.threads, "torch": args.threads})
    report(
        f"training step, our CTC vs torch's, {args.threads} thread(s)",
        times,
        "asr",
        "torch",
    )
    if args.compare_threads:
        one, two = (
            step_fn(make_task(cfg, "asr"), data),
            step_fn(make_task(cfg, "asr"), data),
        )
        times = alternate({"1 thread": one, "2 threads": two}, args.rounds,
                          {"1 thread": 1, "2 threads": 2})  # fmt: skip
        report("training step (our CTC), torch threads", times, "1 thread", "2 threads")


if __name__ == "__main__":
    main()
