"""The small steps of recipes/synthetic/finetune.sh that are not `asr` commands:

    finetune_report.py worst BEFORE.json              the test voice with the worst CER
    finetune_report.py subset TEST.jsonl N OUT.jsonl     the first N of every voice
    finetune_report.py select TEST.jsonl SPK OUT.jsonl   that voice's test utterances
    finetune_report.py table --speaker SPK --before B.json --tuned T.json \
        --scratch S.json --runs EXP/tuned EXP/scratch    the RESULTS.md tables
        (a run: its directory, or the checkpoint that was scored)

BEFORE/T/S.json are `asr evaluate --json` outputs (with per-speaker counts).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def per_speaker(path: Path) -> dict[str, dict]:
    return {r["speaker"]: r for r in json.loads(path.read_text())["per_speaker"]}


def worst(args: argparse.Namespace) -> None:
    speakers = per_speaker(args.before)
    if not speakers:
        sys.exit(f"{args.before}: no per-speaker scores (a manifest without speakers?)")
    print(max(speakers, key=lambda s: speakers[s]["cer"]))


def select(args: argparse.Namespace) -> None:
    from asr.manifest import read_manifest, write_manifest

    utts = [u for u in read_manifest(args.manifest) if u.speaker == args.speaker]
    if not utts:
        sys.exit(f"{args.manifest}: no utterance of speaker {args.speaker}")
    write_manifest(args.out, utts)


def subset(args: argparse.Namespace) -> None:
    from asr.manifest import read_manifest, write_manifest

    seen: dict[str | None, int] = {}
    kept = []
    for u in read_manifest(args.manifest):
        seen[u.speaker] = seen.get(u.speaker, 0) + 1
        if args.n <= 0 or seen[u.speaker] <= args.n:
            kept.append(u)
    write_manifest(args.out, kept)


def run_facts(run: Path) -> tuple[int, str]:
    """(optimizer steps, the wall time its log reports or "-") of a training run:
    its directory (its last.ckpt) or one of its checkpoints."""
    import torch

    ckpt = run if run.is_file() else run / "logs" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    log = Path(f"{run.parent if run.is_file() else run}.log")
    wall = "-"
    if log.is_file():
        found = re.findall(r"training: .*? in (\d+ min \d+ s)", log.read_text())
        wall = found[-1] if found else "-"
    return int(state["global_step"]), wall


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def pooled_cer(rows: list[dict]) -> float:
    chars = sum(r["chars"] for r in rows)
    return sum(r["cer"] * r["chars"] for r in rows) / chars


def table(args: argparse.Namespace) -> None:
    before, tuned = per_speaker(args.before), per_speaker(args.tuned)
    scratch = per_speaker(args.scratch)
    spk = args.speaker
    others = [s for s in before if s != spk]
    (tuned_steps, tuned_wall), (scratch_steps, scratch_wall) = map(run_facts, args.runs)
    print(f"| model | steps | wall | voice {spk} WER | voice {spk} CER | "
          "other 9 voices CER |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    others_before = pooled_cer([before[s] for s in others])
    others_tuned = pooled_cer([tuned[s] for s in others])
    rows = [
        ("the demo model", "", "", before[spk], others_before),
        ("fine-tuned from it", tuned_steps, tuned_wall, tuned[spk], others_tuned),
        ("from scratch", scratch_steps, scratch_wall, scratch[spk], None),
    ]
    for name, steps, wall, r, other in rows:
        rest = "" if other is None else pct(other)
        cells = [name, steps, wall, pct(r["wer"]), pct(r["cer"]), rest]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()
    print("| voice | CER before | CER after fine-tuning | change |")
    print("|---|---:|---:|---:|")
    for s in others:
        a, b = before[s]["cer"], tuned[s]["cer"]
        print(f"| {s} | {pct(a)} | {pct(b)} | {100 * (b - a):+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("worst")
    p.add_argument("before", type=Path)
    p = sub.add_parser("select")
    p.add_argument("manifest", type=Path)
    p.add_argument("speaker")
    p.add_argument("out", type=Path)
    p = sub.add_parser("subset")
    p.add_argument("manifest", type=Path)
    p.add_argument("n", type=int)
    p.add_argument("out", type=Path)
    p = sub.add_parser("table")
    p.add_argument("--speaker", required=True)
    for name in ("before", "tuned", "scratch"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--runs", type=Path, nargs=2, required=True)
    args = parser.parse_args()
    commands = {"worst": worst, "subset": subset, "select": select, "table": table}
    commands[args.command](args)


if __name__ == "__main__":
    main()
