#!/usr/bin/env python
"""Training on tcmalloc against glibc's malloc: step time and memory.

``asr train`` runs on tcmalloc when it is installed (asr/malloc.py). This measures
why: training steps of the demo model (conf/synthetic/demo.yaml: frontend, two
convolutions, three GRU layers, phone-free CTC, AdamW; bf16-mixed where the CPU
has bfloat16, else float32) on batches of every length, as the training sampler
makes them (utterances of 1-15 s, at most 32 and at most 60 s of padded audio per
batch), in a fresh process per run:

- ``glibc``: glibc's malloc tuned as ``asr train`` tunes it without tcmalloc
  (``asr.train.keep_freed_memory``: freed blocks kept for reuse);
- ``tcmalloc``: the same script with tcmalloc in ``LD_PRELOAD``.

The two alternate, in swapped order each round (the machine is shared and noisy);
the table gives the median seconds per step over the whole run, the process's peak
and final RSS, and the median of the per-round time ratios.

Usage: python tools/bench_alloc.py [--rounds 3] [--steps 150] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class DemoTraining:
    """Training steps of a config's model (conf/synthetic/demo.yaml by default)
    without the phone head, as ``asr train`` runs them: AdamW, bf16-mixed where the
    CPU has bfloat16 (as the recipe decides), else float32. Also used by
    tools/bench_sampler.py."""

    def __init__(self, config: str, seed: int) -> None:
        import torch
        import yaml

        from asr.task import ASRTask

        cfg = yaml.safe_load(Path(config).read_text())["model"]
        cfg.pop("phone_loss_weight", None)
        cfg.pop("phone_layer", None)
        torch.manual_seed(seed)
        self.task = ASRTask(**cfg)
        self.task.train()
        self.opt = torch.optim.AdamW(self.task.parameters(), 1e-3)
        cpuinfo = Path("/proc/cpuinfo")
        flags = cpuinfo.read_text() if cpuinfo.exists() else ""
        self.bf16 = "avx512_bf16" in flags or "amx_bf16" in flags

    def step(self, waves, wave_lens, targets_for) -> None:
        """One step on ``waves`` ``(B, n)`` of ``wave_lens`` samples; CTC targets
        from ``targets_for(out_lens) -> (targets (B, S), target_lens (B,))``."""
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            feats, feat_lens = self.task._features(waves, wave_lens)
            log_probs, out_lens = self.task.model(feats, feat_lens)
        targets, target_lens = targets_for(out_lens)
        loss = self.task.ctc_loss(log_probs, targets, out_lens, target_lens)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def child(config: str, steps: int, seed: int) -> None:
    """Run ``steps`` training steps; print one JSON line of measurements."""
    import torch

    from asr.malloc import allocator
    from asr.train import keep_freed_memory

    keep_freed_memory()  # as `asr train` does (a no-op on tcmalloc)
    training = DemoTraining(config, seed)
    rng = random.Random(seed)
    sr = 16000
    rss = []
    audio = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        longest = rng.uniform(1.0, 15.0)
        B = max(1, min(32, int(60 // longest)))
        lens = [int(sr * longest * rng.uniform(0.9, 1.0)) for _ in range(B)]
        lens[0] = int(sr * longest)
        waves = torch.randn(B, max(lens)) * 0.1
        wave_lens = torch.tensor(lens)
        audio += sum(lens) / sr

        def targets_for(out_lens, B=B):
            targets = torch.randint(1, 29, (B, max(1, int(out_lens.min()) // 3)))
            return targets, torch.full((B,), targets.shape[1])

        training.step(waves, wave_lens, targets_for)
        rss.append(_rss_mb())
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "allocator": allocator(),
                "seconds_per_step": seconds / steps,
                "real_time": audio / seconds,
                "peak_rss_mb": _peak_rss_mb(),
                "final_rss_mb": rss[-1],
                "rss_at_third_mb": rss[len(rss) // 3],
            }
        )
    )


def _rss_mb() -> float:
    return (
        int(Path("/proc/self/statm").read_text().split()[1])
        * os.sysconf("SC_PAGE_SIZE")
        / 2**20
    )


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(kind: str, args: argparse.Namespace, seed: int) -> dict:
    from asr.malloc import find_tcmalloc, tcmalloc_env

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if kind == "tcmalloc":
        env = tcmalloc_env(str(find_tcmalloc()), env)
    cmd = [sys.executable, __file__, "--child", "--config", args.config]
    cmd += ["--steps", str(args.steps), "--seed", str(seed)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["allocator"] == ("tcmalloc" if kind == "tcmalloc" else "system"), (
        kind,
        result,
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--config", default=str(ROOT / "conf/synthetic/demo.yaml"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.config, args.steps, args.seed)
        return
    from asr.malloc import find_tcmalloc

    if find_tcmalloc() is None:
        raise SystemExit("tcmalloc is not installed (Debian: libtcmalloc-minimal4)")
    results: dict[str, list[dict]] = {"glibc": [], "tcmalloc": []}
    ratios = []
    for r in range(args.rounds):
        order = ["glibc", "tcmalloc"] if r % 2 == 0 else ["tcmalloc", "glibc"]
        got = {kind: run(kind, args, args.seed) for kind in order}
        for kind in order:
            results[kind].append(got[kind])
            g = got[kind]
            print(
                f"round {r + 1} {kind:8s} {g['seconds_per_step']:.3f} s/step "
                f"({g['real_time']:.0f}x real time), RSS peak {g['peak_rss_mb']:.0f} "
                f"MB, after a third {g['rss_at_third_mb']:.0f} MB, at the end "
                f"{g['final_rss_mb']:.0f} MB",
                flush=True,
            )
        ratios.append(
            got["tcmalloc"]["seconds_per_step"] / got["glibc"]["seconds_per_step"]
        )
    print(f"\n{args.steps} training steps per run, {args.rounds} rounds, medians:\n")
    print("| allocator | s/step | real time | peak RSS | RSS after 1/3 | RSS at end |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, rs in results.items():

        def med(key: str, rs: list[dict] = rs) -> float:
            return statistics.median(x[key] for x in rs)

        print(
            f"| {kind} | {med('seconds_per_step'):.3f} | {med('real_time'):.0f}x | "
            f"{med('peak_rss_mb'):.0f} MB | {med('rss_at_third_mb'):.0f} MB | "
            f"{med('final_rss_mb'):.0f} MB |"
        )
    ratio = statistics.median(ratios)
    print(f"\ntime tcmalloc / glibc (median of rounds): {ratio:.2f}")


if __name__ == "__main__":
    main()
