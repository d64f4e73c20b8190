#!/usr/bin/env python
"""The synthetic recipe's scaling curve: test CER against training CPU-minutes.

    python recipes/synthetic/plot_scaling.py [--csv scaling.csv] [-o scaling.png]

Reads ``scaling.csv`` beside this script (one row per configuration and test set,
every number measured; see RESULTS.md; xl's own test set is the large run's) and
draws, on a logarithmic time axis, each
configuration's test CER greedy and with the LM on its own test set, and greedy on
the demo's test set, which none of the three trained on (the one comparison on the
same utterances). Training CPU-minutes are wall-clock minutes of ``asr train``
(validation included) times the cores it ran on.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict[str, str]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    own = [r for r in rows if r["own_test_set"] == "yes"]
    demo_set = [r for r in rows if r["test_set"] == "demo"]

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=150)
    series = [
        (own, "test_cer_greedy", "greedy, its own test set", "o-", "tab:blue"),
        (own, "test_cer_lm", "with the LM, its own test set", "s-", "tab:green"),
        (demo_set, "test_cer_greedy", "greedy, the demo's test set", "^--", "tab:gray"),
    ]
    for subset, key, label, style, color in series:
        xs = [float(r["training_cpu_minutes"]) for r in subset]
        ys = [float(r[key]) for r in subset]
        ax.plot(xs, ys, style, color=color, label=label, markersize=6)
    for r in own:
        x, y = float(r["training_cpu_minutes"]), float(r["test_cer_greedy"])
        text = f"{r['config']}: {r['train_hours']} h x {r['passes']} passes"
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 8), fontsize=8)
    ax.set_xscale("log")
    ticks = [float(r["training_cpu_minutes"]) for r in own]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.0f}" for t in ticks])
    ax.set_xlim(min(ticks) / 1.3, max(ticks) * 1.5)
    ax.set_ylim(0, 30)
    ax.set_xlabel("training CPU-minutes (wall-clock minutes x 2 cores, log scale)")
    ax.set_ylabel("test CER (%), held-out voices")
    ax.set_title(
        "Synthetic recipe: test CER against training compute\n"
        "(the demo model; Intel Xeon with AMX, 2 cores)",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=HERE / "scaling.csv")
    p.add_argument("-o", "--output", type=Path, default=HERE / "scaling.png")
    args = p.parse_args(argv)
    plot(read_rows(args.csv), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
