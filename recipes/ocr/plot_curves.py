#!/usr/bin/env python
"""The curves of recipes/ocr/RESULTS.md: training loss and validation error of OCR
runs, one line per run, from their metrics.csv (read with asr.plots.training_series).

    python recipes/ocr/plot_curves.py -o recipes/ocr/curves.png \\
        "CAPTCHAs, our CTC=exp/ocr/logs/metrics.csv" \\
        "CAPTCHAs, torch's CTC=exp/ocr-torch/logs/metrics.csv" \\
        "text lines, our CTC=exp/ocr-lines/logs/metrics.csv"
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from asr.atomic import atomic_write_bytes  # noqa: E402
from asr.plots import training_series  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=path/to/metrics.csv")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for k, run in enumerate(args.runs):
        label, _, path = run.partition("=")
        series, _ = training_series(path)
        color = f"C{k}"
        if "train_loss" in series:
            xs, ys = zip(*series["train_loss"], strict=True)
            axes[0].plot(xs, ys, lw=0.7, color=color, label=label)
        for ax, key in ((axes[1], "val_seq_error"), (axes[2], "val_cer")):
            if key in series:
                xs, ys = zip(*series[key], strict=True)
                ax.plot(xs, [100 * y for y in ys], "o-", color=color, label=label)
    axes[0].set_ylabel("CTC loss (training, per step)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("validation sequence error (%)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("validation CER (%)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    atomic_write_bytes(args.output, buffer.getbuffer())
    print(args.output)


if __name__ == "__main__":
    main()
