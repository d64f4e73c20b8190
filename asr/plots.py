"""Pictures of what a model hears and emits: the alignment plot.

:func:`plot_alignment` draws, on one time axis in seconds, the model's input features
(top), its per-frame character posteriors (middle: every class over time, blank
included, as a heat map) and the greedy decoder's words as labelled spans (bottom).
It shows at a glance whether CTC's spikes sit on the speech, which characters compete,
and how word times relate to the audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asr.decoding import GreedyDecoder, Hypothesis

__all__ = ["plot_alignment"]


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
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (headless machines, CI)
    import matplotlib.pyplot as plt

    from asr.audio import load_audio
    from asr.inference import load_model

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
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return hyp


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
