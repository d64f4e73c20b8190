"""Data augmentation: SpecAugment on features, speed perturbation on waveforms.

* :class:`SpecAugment` (Park et al., 2019, "SpecAugment: A Simple Data Augmentation
  Method for Automatic Speech Recognition", sec. 2) masks bands of frequency channels
  and blocks of frames of the normalised features, on the model's device, in training
  mode only. Time warping is left out: the paper reports it as the least useful of the
  three and the most expensive. Time masks scale with each utterance's own length
  (the "adaptive" masks of Park et al., 2020, "SpecAugment on Large Scale Datasets"),
  so short utterances are not wiped out.
* :func:`speed_perturb` / :class:`SpeedPerturb` (Ko et al., 2015, "Audio Augmentation
  for Speech Recognition"; Kaldi's and ESPnet's 0.9/1.0/1.1 recipe) resample a
  waveform so that it plays ``factor`` times faster at the same nominal rate, changing
  tempo and pitch together. It runs on the CPU in the dataset, before features.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import get_worker_info

__all__ = ["SpecAugment", "SpeedPerturb", "speed_perturb"]


class SpecAugment(nn.Module):
    """Frequency and time masking of a padded batch of features (no warping).

    Each utterance independently gets ``freq_masks`` bands of ``f`` consecutive
    channels set to ``mask_value``, ``f ~ U{0, ..., min(freq_width, F)}``, starting
    at ``f0 ~ U{0, ..., F - f}``, and ``time_masks`` blocks of ``t`` consecutive
    frames, ``t ~ U{0, ..., W}`` starting at ``t0 ~ U{0, ..., n - t}``, where ``n``
    is that utterance's valid frame count and ``W = floor(time_width * n)`` for a
    float ``time_width`` (a fraction of the utterance), ``min(time_width, n)`` for an
    int (frames). Masks may overlap. Frames past ``feat_lens`` are never touched.

    The defaults are the LibriSpeech policies' frequency masks (LD: two of up to 27
    channels) and two adaptive time masks of up to 5% of the utterance each.
    ``mask_value = 0.0`` is the mean of normalised features.

    In eval mode the module is the identity (it returns its inputs). All masks of a
    batch are drawn in one vectorised step from torch's global RNG, or from
    ``generator`` if given (its device may differ from the features').

    Args:
        freq_masks: number of frequency masks per utterance.
        freq_width: maximum width of a frequency mask in channels (clipped to ``F``).
        time_masks: number of time masks per utterance.
        time_width: maximum width of a time mask: a float in [0, 1] is a fraction of
            the utterance's valid frames, an int a number of frames.
        mask_value: the value written into masked cells.
        generator: optional source of randomness, for reproducible masks.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 2,
        time_width: float | int = 0.05,
        mask_value: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("freq_masks", freq_masks),
            ("freq_width", freq_width),
            ("time_masks", time_masks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if isinstance(time_width, bool) or not isinstance(time_width, int | float):
            raise ValueError(
                f"time_width must be a float or an int, got {time_width!r}"
            )
        if isinstance(time_width, float) and not 0.0 <= time_width <= 1.0:
            raise ValueError(f"a fractional time_width must be in [0, 1]: {time_width}")
        if isinstance(time_width, int) and time_width < 0:
            raise ValueError(f"time_width must be >= 0, got {time_width}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.mask_value = float(mask_value)
        self.generator = generator

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
            f"time_masks={self.time_masks}, time_width={self.time_width!r}, "
            f"mask_value={self.mask_value}"
        )

    def _rand(self, *shape: int, device: torch.device) -> Tensor:
        """Uniform [0, 1) float32 of ``shape`` on ``device``, from our RNG."""
        if self.generator is None:
            return torch.rand(shape, device=device)
        g = self.generator
        return torch.rand(shape, generator=g, device=g.device).to(device)

    @staticmethod
    def _bands(rand: Tensor, max_width: Tensor, size: Tensor, length: int) -> Tensor:
        """Union of random intervals, as a mask over positions ``0..length-1``.

        Args:
            rand: ``(B, M, 2)`` uniforms: width and start draws of ``M`` intervals.
            max_width: ``(B, 1)`` int64 largest width for each row.
            size: ``(B, 1)`` int64 number of positions intervals may cover.
            length: number of positions of the mask.

        Returns:
            ``(B, length)`` bool, True inside some interval; an interval of width
            ``w ~ U{0..max_width}`` starts at ``s ~ U{0..size - w}``.
        """
        # floor(u * (k + 1)) is uniform on {0..k}; u < 1 so it never reaches k + 1.
        width = (rand[..., 0] * (max_width + 1)).long()  # (B, M)
        start = (rand[..., 1] * (size - width + 1)).long()  # (B, M)
        pos = torch.arange(length, device=rand.device).view(1, 1, -1)  # (1, 1, L)
        inside = (pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))
        return inside.any(dim=1)  # (B, M, L) -> (B, L)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Mask a batch (training mode) or pass it through (eval mode).

        Args:
            feats: ``(B, F, T)`` features, padded past ``feat_lens``.
            feat_lens: ``(B,)`` int64 valid frames of each utterance.

        Returns:
            ``(feats, feat_lens)``: a masked copy of ``feats`` (the input itself in eval
            mode) and ``feat_lens`` unchanged.
        """
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats, feat_lens
        if feats.dim() != 3:
            raise ValueError(f"feats must be (B, F, T), got shape {tuple(feats.shape)}")
        B, F, T = feats.shape
        device = feats.device
        lens = feat_lens.to(device=device, dtype=torch.int64).clamp(0, T).view(B, 1)
        valid = torch.arange(T, device=device).view(1, T) < lens  # (B, T)
        mask = torch.zeros(B, F, T, dtype=torch.bool, device=device)
        if self.freq_masks:
            channels = torch.full((B, 1), F, dtype=torch.int64, device=device)
            max_f = channels.clamp(max=self.freq_width)
            rand = self._rand(B, self.freq_masks, 2, device=device)
            freq = self._bands(rand, max_f, channels, F)  # (B, F)
            mask |= freq.unsqueeze(-1)  # (B, F) -> (B, F, 1)
        if self.time_masks:
            if isinstance(self.time_width, float):
                # Rounded down, with a hair of slack so 0.05 * 100 gives 5, not 4.
                max_t = (lens * self.time_width + 1e-6).floor().long()
            else:
                max_t = lens.clamp(max=self.time_width)
            rand = self._rand(B, self.time_masks, 2, device=device)
            time = self._bands(rand, max_t, lens, T)  # (B, T), within [0, lens)
            mask |= time.unsqueeze(1)  # (B, T) -> (B, 1, T)
        mask &= valid.unsqueeze(1)  # (B, T) -> (B, 1, T): padding stays as it was
        return feats.masked_fill(mask, self.mask_value), feat_lens


def speed_perturb(wave: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Play ``wave`` ``factor`` times faster: tempo and pitch scale together.

    The signal is resampled from ``sample_rate * factor`` to ``sample_rate`` Hz and
    kept at the nominal ``sample_rate``, as ``sox speed`` in Kaldi's and ESPnet's
    recipes: a 440 Hz tone becomes ``440 * factor`` Hz and the output has
    ``ceil(N / factor)`` samples. ``sample_rate * factor`` is rounded to whole Hz (the
    ratio is exact for the usual factors). Kaiser-windowed sinc resampling
    (:func:`torchaudio.functional.resample`, "kaiser_best") keeps the band up to
    ~95% of the lower Nyquist frequency and removes what speeding up would push
    above it, so nothing aliases.

    Args:
        wave: ``(..., N)`` float waveform(s), typically ``(N,)``.
        sample_rate: the waveform's sampling rate in Hz.
        factor: speed factor ``> 0``; 1.0 returns ``wave`` itself.

    Returns:
        ``(..., ceil(N / factor))`` waveform at ``sample_rate``, ``wave``'s dtype.
    """
    if not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"speed factor must be a positive number, got {factor!r}")
    orig_freq = round(sample_rate * factor)
    if orig_freq == sample_rate:
        return wave
    # resample reduces the ratio by the gcd (17600:16000 -> 11:10). torchaudio's
    # default 6-zero-crossing Hann filter lets a tone pushed past Nyquist alias back
    # at half its amplitude; its "kaiser_best" settings (as librosa's) take < 1 ms
    # per second of audio and attenuate it ~50 dB.
    import torchaudio.functional as AF  # speed perturbation alone needs it

    return AF.resample(
        wave,
        orig_freq=orig_freq,
        new_freq=sample_rate,
        lowpass_filter_width=64,
        rolloff=0.9475937167399596,
        resampling_method="sinc_interp_kaiser",
        beta=14.769656459379492,
    )


class SpeedPerturb:
    """Random speed perturbation for a dataset: one factor per call, uniformly.

    ``SpeedPerturb(16000)(wave)`` returns ``speed_perturb(wave, 16000, factor)`` with
    ``factor`` drawn uniformly from ``factors``. Note that perturbed utterances change
    duration (up to ``1 / min(factors)`` times longer).

    Randomness: with ``seed=None`` factors come from torch's global RNG, which a
    :class:`~torch.utils.data.DataLoader` seeds differently in every worker and every
    epoch (and reproducibly after ``torch.manual_seed``), the right choice for
    training. With a ``seed`` the draws come from a private generator: seeded with
    ``seed`` in the main process, and in a DataLoader worker with ``seed`` mixed with
    that worker's own seed, so that workers do not repeat each other's factors.

    Args:
        sample_rate: sampling rate of the waveforms in Hz.
        factors: the speed factors to choose from, each ``> 0``.
        seed: optional seed of a private generator (see above).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        factors: Sequence[float] = (0.9, 1.0, 1.1),
        seed: int | None = None,
    ) -> None:
        if not factors:
            raise ValueError("factors must not be empty")
        for factor in factors:
            if not factor > 0 or not math.isfinite(factor):
                raise ValueError(f"speed factors must be positive, got {factor!r}")
        self.sample_rate = sample_rate
        self.factors = tuple(float(f) for f in factors)
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._owner: tuple[int, int | None] | None = None  # (pid, worker seed)

    def __repr__(self) -> str:
        return (
            f"SpeedPerturb(sample_rate={self.sample_rate}, factors={self.factors}, "
            f"seed={self.seed})"
        )

    def __getstate__(self) -> dict:
        # A copy (a spawned worker) seeds its own generator on first use.
        return {**self.__dict__, "_generator": None, "_owner": None}

    def _rng(self) -> torch.Generator | None:
        """The generator for this process: None (global RNG) without a seed."""
        if self.seed is None:
            return None
        worker = get_worker_info()
        owner = (os.getpid(), None if worker is None else worker.seed)
        if self._generator is None or owner != self._owner:
            seed = self.seed if worker is None else hash((self.seed, worker.seed))
            self._generator = torch.Generator().manual_seed(seed & (2**63 - 1))
            self._owner = owner
        return self._generator

    def choose(self) -> float:
        """Draw a speed factor."""
        i = int(torch.randint(len(self.factors), (), generator=self._rng()))
        return self.factors[i]

    def __call__(self, wave: Tensor) -> Tensor:
        """``(..., N)`` waveform -> ``(..., ceil(N / factor))`` at a random speed."""
        return speed_perturb(wave, self.sample_rate, self.choose())
