"""Pictures: what a model hears and emits (the alignment plot), and how training went
(the training curves).

:func:`plot_alignment` draws, on one time axis in seconds, the model's input features
(top), its per-frame character posteriors (middle: every class over time, blank
included, as a heat map) and the greedy decoder's words as labelled spans (bottom).
It shows at a glance whether CTC's spikes sit on the speech, which characters compete,
and how word times relate to the audio.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr.atomic import atomic_write_bytes
from asr.audio import load_audio
from asr.decoding import GreedyDecoder, Hypothesis
from asr.inference import load_model

__all__ = ["plot_alignment", "plot_training_curves", "training_series"]


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: files only, never a window (headless
    machines, CI). Imported on first use: most commands draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, output: str | Path, dpi: int) -> Path:
    """Write the figure to ``output`` atomically (the format follows the suffix)."""
    output = Path(output)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=output.suffix[1:] or "png")
    atomic_write_bytes(output, buffer.getbuffer())
    return output


def plot_alignment(
    audio: str | Path,
    checkpoint: str | Path,
    output: str | Path,
    device: str = "cpu",
    dpi: int = 100,
) -> Hypothesis:
    """Draw features, posteriors and greedy word spans of one file to ``output``.

    Args:
        audio: an audio file (any format :func:`asr.audio.load_audio` reads).
        checkpoint: a model checkpoint (:func:`asr.inference.load_model`).
        output: the image to write; the format follows the suffix (``.png``,
            ``.pdf``, ``.svg``...). Its directory is created.
        device: where the model runs.
        dpi: resolution of raster formats.

    Returns:
        The greedy hypothesis drawn in the bottom panel.

    Raises:
        AudioError: the file is not readable audio (the message names it).
        CheckpointError: the checkpoint cannot be loaded.
    """
    plt = _pyplot()
    rec = load_model(checkpoint, device)
    wave = load_audio(audio, rec.sample_rate)
    waves, wave_lens = wave[None, :], torch.tensor([wave.numel()])
    with torch.inference_mode():
        feats, feat_lens = rec.frontend(waves.to(rec.device), wave_lens.to(rec.device))
    # (1, F, T_feat) -> (F, T_feat), valid frames only
    feats_np = feats[0, :, : int(feat_lens[0])].float().cpu().numpy()
    log_probs, out_lens = rec.log_probs(waves, wave_lens)  # (T, 1, V), (1,)
    lp = log_probs[: int(out_lens[0]), 0].float().cpu().numpy()  # (T, V)
    labels = list(rec.tokenizer.vocab)
    frame_s = rec.frame_seconds
    hyp = GreedyDecoder(labels, rec.tokenizer.blank).decode(lp, frame_s)

    feat_s = rec.frontend.hop_length / rec.sample_rate
    t_end = max(feats_np.shape[1] * feat_s, lp.shape[0] * frame_s)
    fig, (ax_f, ax_p, ax_w) = plt.subplots(
        3,
        1,
        sharex=True,
        figsize=(max(8.0, min(24.0, 2.0 + 2.5 * t_end)), 8),
        gridspec_kw={"height_ratios": [3, 3, 1]},
    )
    kind = rec.description.get("frontend", {}).get("kind", "features")
    ax_f.imshow(
        feats_np,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0, feats_np.shape[1] * feat_s, 0, feats_np.shape[0]),
    )
    ax_f.set_ylabel(f"{kind} bin")
    ax_f.set_title(f'{Path(audio).name}: "{_shorten(hyp.text, 90)}"')

    post = np.exp(lp).T  # (T, V) -> (V, T): a row per class
    V = post.shape[0]
    ax_p.imshow(
        post,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        extent=(0, lp.shape[0] * frame_s, -0.5, V - 0.5),
    )
    names = ["blank" if i == rec.tokenizer.blank else c for i, c in enumerate(labels)]
    names = ["space" if c == " " else c for c in names]
    ax_p.set_yticks(range(V), names, fontsize=6)
    ax_p.set_ylabel("class posterior")

    for k, word in enumerate(hyp.words):
        color = "C0" if k % 2 == 0 else "C1"
        ax_w.axvspan(word.start, word.end, ymin=0.1, ymax=0.9, color=color, alpha=0.35)
        ax_w.text(
            (word.start + word.end) / 2,
            0.5,
            word.text,
            ha="center",
            va="center",
            fontsize=9,
        )
        for ax in (ax_f, ax_p):
            for t in (word.start, word.end):
                ax.axvline(t, color=color, lw=0.6, alpha=0.6)
    ax_w.set_ylim(0, 1)
    ax_w.set_yticks([])
    ax_w.set_ylabel("words")
    ax_w.set_xlim(0, t_end)
    ax_w.set_xlabel("time (s)")
    fig.tight_layout()
    _save(fig, output, dpi)
    plt.close(fig)
    return hyp


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def training_series(
    metrics_csv: str | Path,
) -> tuple[dict[str, list[tuple[float, float]]], list[float]]:
    """What the training curves draw, from CSVLogger's ``metrics.csv``: each metric's
    ``(step, value)`` points, at the optimizer step where it was logged (a
    validation at the end of an epoch sits at that epoch's last step, not at the
    epoch's number), and the last step of each epoch."""
    series: dict[str, list[tuple[float, float]]] = {}
    epoch_ends: dict[float, float] = {}  # epoch -> last step logged in it
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            step, epoch = row.get("step") or "", row.get("epoch") or ""
            if not step:
                continue
            if epoch:
                e = float(epoch)
                epoch_ends[e] = max(epoch_ends.get(e, 0.0), float(step))
            for key, value in row.items():
                if key not in ("step", "epoch") and value:
                    series.setdefault(key, []).append((float(step), float(value)))
    return series, [epoch_ends[e] for e in sorted(epoch_ends)]


def plot_training_curves(
    metrics_csv: Path,
    png: Path,
    rates: tuple[tuple[str, str], ...] = (("val_wer", "WER"), ("val_cer", "CER")),
) -> Path:
    """Training loss per step, validation loss and error rates (each at the step
    where it was computed, :func:`training_series`), from ``metrics.csv`` to
    ``png``; dotted lines mark the ends of epochs. ``rates``: the ``(metric,
    label)`` pairs drawn in percent."""
    plt = _pyplot()
    series, epoch_ends = training_series(metrics_csv)
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "train_loss_step"):
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            ax_loss.plot(xs, ys, lw=0.8, label="train (per step)")
            break
    if "val_loss" in series:
        xs, ys = zip(*series["val_loss"], strict=True)
        ax_loss.plot(xs, ys, "o-", color="C1", label="validation")
    ax_loss.set_ylabel("CTC loss")
    ax_loss.set_yscale("log")
    for key, label in rates:
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            ax_err.plot(xs, [100 * y for y in ys], "o-", label=f"validation {label}")
    ax_err.set_ylabel("%")
    ax_err.set_ylim(bottom=0)
    for ax in (ax_loss, ax_err):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for end in epoch_ends:
            ax.axvline(end, color="0.6", lw=0.6, ls=":")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    _save(fig, png, 100)
    plt.close(fig)
    return Path(png)
