"""Acoustic frontends: waveforms to features, computed on the model's device.

Each frontend is an :class:`torch.nn.Module` without trainable parameters whose
window, filterbank and DCT matrix are (non-persistent) buffers, so ``.to(device)``
moves them with the model and a checkpoint rebuilds them from :meth:`Frontend.config`.
They share one interface::

    feats, feat_lens = frontend(waves, wave_lens)
    # waves (B, N) float32 padded waveforms, wave_lens (B,) int64 valid samples
    # feats (B, F, T) float32, feat_lens (B,) int64 valid frames, T = frontend.frames(N)

* :class:`LogSpectrogram`: DeepSpeech2's input (Amodei et al., 2016, sec. 3.1): the log
  power spectrum of 20 ms Hann windows every 10 ms, ``n_fft = win_length`` (320 samples
  and 161 bins at 16 kHz).
* :class:`LogMel`: log mel energies, 80 bands of 25 ms windows every 10 ms,
  ``n_fft = 512``, with librosa's default (Slaney) mel scale and area normalisation.
* :class:`MFCC`: the orthonormal DCT-II of :class:`LogMel`'s 80 log energies, first 40
  coefficients.

Padding never leaks. The STFT is centred like librosa's and
``torch.stft(center=True)``: frame ``t`` covers samples
``[t * hop_length - n_fft // 2, t * hop_length + n_fft // 2)``, and the signal is
extended by reflection, but about each utterance's *own* ends rather than the ends of
the padded batch. An utterance of ``n`` samples has exactly
``frames(n) = 1 + n // hop_length`` frames (for even ``n_fft``), each equal to what it
is when the utterance is computed alone (and to ``librosa.stft(..., center=True,
pad_mode="reflect")``), and every frame past ``feat_lens`` is exactly 0.

Logarithms are natural: ``log(power + eps)`` with ``eps = 1e-10`` by default. That is
below the quantisation floor of 16-bit audio scaled to [-1, 1] (the noise of one LSB
gives power spectrum values around 1e-8 with these windows), so ``eps`` only shapes
digital silence, and it keeps ``log`` finite there.

Normalisation (``normalize``):

* ``"utterance"`` (default): each feature of each utterance gets zero mean and unit
  variance over that utterance's valid frames (cepstral mean and variance
  normalisation).
* ``"global"``: a fixed per-feature mean and standard deviation, estimated from
  training data with :meth:`Frontend.fit_global_stats` /
  :meth:`Frontend.accumulate_global_stats` and saved in the ``state_dict``.
* ``"none"``: the log features as they are.

Features are computed in float32 with autocast disabled: under bf16 mixed precision a
mel matmul in bfloat16 would keep only ~3 significant digits of energies that span
ten orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FRONTENDS",
    "NORMALIZATIONS",
    "Frontend",
    "LogMel",
    "LogSpectrogram",
    "MFCC",
    "build_frontend",
]

NORMALIZATIONS = ("utterance", "global", "none")

# Floor of a standard deviation used for normalisation: a constant feature (digital
# silence, a one-frame utterance) becomes 0 instead of NaN.
STD_FLOOR = 1e-5


def _samples(sample_rate: int, milliseconds: float) -> int:
    """The number of samples in ``milliseconds`` at ``sample_rate`` Hz, rounded."""
    return int(round(sample_rate * milliseconds / 1000))


def _reflect_index(i: Tensor, lens: Tensor) -> Tensor:
    """Map positions ``i`` (any integers) into ``[0, lens)`` by mirror reflection.

    The reflection is ``numpy.pad(mode="reflect")``'s, edge samples not repeated
    (``x[-k] = x[k]``, ``x[n - 1 + k] = x[n - 1 - k]``) and repeated periodically when
    the padding is longer than the signal, as numpy does. A length of 0 or 1 maps
    everything to 0.

    Args:
        i: ``(B, K)`` int64 positions relative to each utterance's first sample.
        lens: ``(B, 1)`` int64 utterance lengths in samples.

    Returns:
        ``(B, K)`` int64 indices in ``[0, max(lens - 1, 0)]``.
    """
    last = (lens - 1).clamp(min=0)  # (B, 1)
    period = (2 * last).clamp(min=1)  # reflection repeats every 2 (n - 1) samples
    j = i.abs() % period
    return torch.where(j > last, period - j, j)


class Frontend(nn.Module):
    """Base class: a centred STFT with per-utterance reflection, log, normalisation.

    Subclasses define :meth:`_features`, mapping a power spectrogram to log
    features, and :attr:`n_features`.

    Args:
        sample_rate: sampling rate of the input waveforms in Hz.
        n_fft: FFT size in samples; ``n_fft // 2 + 1`` frequency bins.
        win_length: Hann window length in samples (``<= n_fft``; a shorter window is
            zero-padded on both sides to ``n_fft``, as torch and librosa do).
        hop_length: frame shift in samples.
        normalize: ``"utterance"``, ``"global"`` or ``"none"`` (see the module doc).
        eps: added to energies before the natural logarithm.
    """

    kind: str = ""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        normalize: str = "utterance",
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalize={normalize!r}; expected one of {NORMALIZATIONS}"
            )
        for name, value in (
            ("sample_rate", sample_rate),
            ("n_fft", n_fft),
            ("win_length", win_length),
            ("hop_length", hop_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if win_length > n_fft:
            raise ValueError(f"win_length={win_length} exceeds n_fft={n_fft}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self._sample_rate = sample_rate
        self._n_fft = n_fft
        self._win_length = win_length
        self._hop_length = hop_length
        self.normalize = normalize
        self.eps = float(eps)
        # Periodic Hann, as librosa's window="hann" (scipy's get_window, fftbins=True).
        self.register_buffer(
            "window", torch.hann_window(win_length, periodic=True), persistent=False
        )

    def _init_global_stats(self) -> None:
        """Register the global statistics buffers; call once ``n_features`` is known.

        ``global_mean`` and ``global_std`` ``(F,)`` are what :meth:`forward` applies;
        ``global_var`` and ``global_count`` (frames seen) let
        :meth:`accumulate_global_stats` merge further batches. All are saved in the
        ``state_dict``; before any statistics are accumulated the normalisation is
        the identity.
        """
        if self.normalize != "global":
            return
        F = self.n_features
        self.register_buffer("global_mean", torch.zeros(F))
        self.register_buffer("global_var", torch.ones(F))
        self.register_buffer("global_std", torch.ones(F))
        # int64 so that a module-wide ``.to(dtype)`` cannot round the count.
        self.register_buffer("global_count", torch.zeros((), dtype=torch.int64))

    def _apply(self, fn: Any, recurse: bool = True) -> Frontend:
        """Follow device moves but never dtype casts: buffers stay float32 / int64.

        A whole-model cast (``model.half()``, Lightning's ``"bf16-true"``) would
        otherwise round the window, filterbank and statistics to 8 significant bits.
        """

        def device_only(t: Tensor) -> Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(device=out.device)

        return super()._apply(device_only, recurse)

    # -- description -----------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Sampling rate of the input waveforms in Hz."""
        return self._sample_rate

    @property
    def n_fft(self) -> int:
        """FFT size in samples."""
        return self._n_fft

    @property
    def win_length(self) -> int:
        """Analysis window length in samples."""
        return self._win_length

    @property
    def hop_length(self) -> int:
        """Frame shift in samples (``hop_length / sample_rate`` seconds per frame)."""
        return self._hop_length

    @property
    def n_features(self) -> int:
        """Feature dimension ``F`` of the output ``(B, F, T)``."""
        raise NotImplementedError

    def frames(self, n_samples: int | Tensor) -> int | Tensor:
        """Number of frames of an utterance of ``n_samples`` samples.

        ``1 + (n + 2 * (n_fft // 2) - n_fft) // hop_length``, the frame count of a
        centred STFT, which is ``1 + n // hop_length`` for an even ``n_fft``.

        Args:
            n_samples: a length (int) or a tensor of lengths (int64, any shape).

        Returns:
            The same type and shape as ``n_samples``.
        """
        extra = 2 * (self.n_fft // 2) - self.n_fft  # 0 for even n_fft, -1 for odd
        return 1 + (n_samples + extra) // self.hop_length

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), ``kind`` included.

        ``build_frontend(frontend.config())`` rebuilds an equal frontend; global
        statistics, if any, travel separately in the ``state_dict``.
        """
        return {
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "normalize": self.normalize,
            "eps": self.eps,
        }

    def extra_repr(self) -> str:
        items = {k: v for k, v in self.config().items() if k != "kind"}
        return ", ".join(f"{k}={v!r}" for k, v in items.items())

    # -- computation -----------------------------------------------------------------

    def _features(self, power: Tensor) -> Tensor:
        """Log features ``(B, F, T)`` from a power spectrum ``(B, n_fft//2+1, T)``."""
        raise NotImplementedError

    def power_spectrogram(
        self, waves: Tensor, wave_lens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``|STFT|^2`` of each utterance, centred and reflected about its own ends.

        Args:
            waves: ``(B, N)`` padded waveforms (cast to float32).
            wave_lens: ``(B,)`` int64 valid samples of each row, ``<= N``.

        Returns:
            ``power`` ``(B, n_fft // 2 + 1, T)`` float32 with ``T = frames(N)``
            (frames past ``feat_lens`` hold arbitrary finite-or-not values), and
            ``feat_lens`` ``(B,)`` int64 on ``waves.device``.
        """
        if waves.dim() != 2:
            raise ValueError(f"waves must be (B, N), got shape {tuple(waves.shape)}")
        B, N = waves.shape
        if wave_lens.shape != (B,):
            raise ValueError(
                f"wave_lens must be ({B},) for waves {tuple(waves.shape)}, "
                f"got {tuple(wave_lens.shape)}"
            )
        # Checked only where it costs no device synchronisation.
        if wave_lens.device.type == "cpu" and B:
            if int(wave_lens.max()) > N or int(wave_lens.min()) < 0:
                raise ValueError(
                    f"wave_lens {wave_lens.tolist()} must be in [0, N={N}]: they "
                    "exceed the padded length or are negative"
                )
        waves = waves.float()
        lens = wave_lens.to(device=waves.device, dtype=torch.int64)
        if N == 0:  # give the gathers below something to read; output is all padding
            waves = waves.new_zeros(B, 1)
        if B == 0:  # MKL's FFT refuses an empty batch
            return waves.new_zeros(0, self.n_fft // 2 + 1, self.frames(N)), lens
        pad = self.n_fft // 2
        # The centred STFT of one utterance is an uncentred STFT of
        # [reflected head | samples | reflected tail]. Pad the batch with zeros and
        # write each row's reflections where its own head and tail padding go.
        padded = nn.functional.pad(waves[:, :N], (pad, pad))  # (B, N) -> (B, N + 2 pad)
        if pad > 0:
            k = torch.arange(pad, device=waves.device).unsqueeze(0)  # (1, pad)
            n = lens.unsqueeze(1)  # (B, 1)
            has_samples = n > 0  # an empty utterance stays all zeros
            head = waves.gather(1, _reflect_index(k - pad, n).expand(B, pad))
            padded[:, :pad] = torch.where(has_samples, head, 0.0)
            tail = waves.gather(1, _reflect_index(n + k, n))
            padded.scatter_(1, n + pad + k, torch.where(has_samples, tail, 0.0))
        spec = torch.stft(
            padded,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.float(),
            center=False,
            return_complex=True,
        )  # (B, n_fft // 2 + 1, T) complex64
        power = torch.view_as_real(spec).square().sum(-1)  # |X|^2 without a sqrt
        feat_lens = self.frames(lens)
        assert power.shape[-1] == self.frames(N), (power.shape, N)
        return power, feat_lens

    def extract(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised log features, zero past ``feat_lens``.

        This is what :meth:`fit_global_stats` expects. Same shapes as :meth:`forward`.
        """
        with torch.autocast(device_type=waves.device.type, enabled=False):
            power, feat_lens = self.power_spectrogram(waves, wave_lens)
            feats = self._features(power)
            return feats.masked_fill(~self._valid(feats, feat_lens), 0.0), feat_lens

    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised features of a padded batch.

        Args:
            waves: ``(B, N)`` float padded waveforms, nominally in [-1, 1].
            wave_lens: ``(B,)`` int64 number of valid samples in each row.

        Returns:
            ``feats`` ``(B, F, T)`` float32 with ``T = frames(N)``, exactly 0 past
            each utterance's length, and ``feat_lens`` ``(B,)`` int64 valid frames
            ``frames(wave_lens)``.
        """
        with torch.autocast(device_type=waves.device.type, enabled=False):
            feats, feat_lens = self.extract(waves, wave_lens)
            valid = self._valid(feats, feat_lens)
            if self.normalize == "utterance":
                feats = self._normalize_utterance(feats, valid, feat_lens)
            elif self.normalize == "global":
                mean = self.global_mean.float().unsqueeze(-1)  # (F,) -> (F, 1)
                std = self.global_std.float().clamp(min=STD_FLOOR).unsqueeze(-1)
                feats = (feats - mean) / std
            return feats.masked_fill(~valid, 0.0), feat_lens

    def frame_features(self, frames: Tensor) -> Tensor:
        """Normalised features of frames cut from a signal by the caller.

        What :meth:`forward` computes for each frame of its centred STFT, for a
        stream (:mod:`asr.streaming`) that cuts the frames itself as the samples
        arrive. Only frame-local normalisations qualify: ``"utterance"`` needs the
        whole utterance.

        Args:
            frames: ``(N, n_fft)`` samples, frame ``i`` being what the centred STFT
                reads for one output frame (reflected ends included).

        Returns:
            ``(F, N)`` float32.
        """
        if self.normalize == "utterance":
            raise ValueError(
                "per-utterance normalisation needs the whole utterance; a stream "
                "needs normalize='global' or 'none'"
            )
        with torch.autocast(device_type=frames.device.type, enabled=False):
            # torch.stft pads a shorter window with zeros on both sides to n_fft
            left = (self.n_fft - self.win_length) // 2
            window = nn.functional.pad(
                self.window.float(), (left, self.n_fft - self.win_length - left)
            )
            spec = torch.fft.rfft(frames.float() * window, dim=-1)  # (N, n_fft//2+1)
            power = torch.view_as_real(spec).square().sum(-1).t()  # -> (bins, N)
            feats = self._features(power.unsqueeze(0))[0]  # (F, N)
            if self.normalize == "global":
                mean = self.global_mean.float().unsqueeze(-1)  # (F,) -> (F, 1)
                std = self.global_std.float().clamp(min=STD_FLOOR).unsqueeze(-1)
                feats = (feats - mean) / std
            return feats

    @property
    def window_extent(self) -> tuple[int, int]:
        """Where frame ``t``'s non-zero window weights lie: samples ``[t * hop_length
        + lo, t * hop_length + hi)`` of the signal (``lo`` negative): what a frame
        needs, and no more, of the samples around its centre."""
        left = (self.n_fft - self.win_length) // 2
        lo = -(self.n_fft // 2) + left
        return lo, lo + self.win_length

    @staticmethod
    def _valid(feats: Tensor, feat_lens: Tensor) -> Tensor:
        """``(B, 1, T)`` bool mask of the valid frames of ``feats`` ``(B, F, T)``."""
        t = torch.arange(feats.shape[-1], device=feats.device)
        return (t < feat_lens.unsqueeze(-1)).unsqueeze(1)  # (B, T) -> (B, 1, T)

    @staticmethod
    def _normalize_utterance(feats: Tensor, valid: Tensor, feat_lens: Tensor) -> Tensor:
        """Zero mean, unit (population) variance per feature over valid frames."""
        n = feat_lens.clamp(min=1).to(feats.dtype).view(-1, 1, 1)  # (B, 1, 1)
        # torch.where rather than a product: padding may hold inf or NaN.
        mean = torch.where(valid, feats, 0.0).sum(-1, keepdim=True) / n  # (B, F, 1)
        centred = torch.where(valid, feats - mean, 0.0)
        std = (centred.square().sum(-1, keepdim=True) / n).sqrt()
        return centred / std.clamp(min=STD_FLOOR)

    # -- global statistics -----------------------------------------------------------

    @torch.no_grad()
    def accumulate_global_stats(self, feats: Tensor, feat_lens: Tensor) -> None:
        """Merge a batch into the running global mean and variance.

        Only valid frames count. Batches merge exactly (Chan et al.'s pairwise update,
        in float64), so accumulating batch by batch equals fitting on them all.

        Args:
            feats: ``(B, F, T)`` *unnormalised* features, as from :meth:`extract`.
            feat_lens: ``(B,)`` int64 valid frames.
        """
        if self.normalize != "global":
            raise RuntimeError(
                f"global statistics need normalize='global', not {self.normalize!r}"
            )
        valid = self._valid(feats, feat_lens)  # (B, 1, T)
        x = feats.double()
        n_b = int(feat_lens.clamp(min=0).sum())
        if n_b == 0:
            return
        mean_b = torch.where(valid, x, 0.0).sum((0, 2)) / n_b  # (F,)
        m2_b = torch.where(valid, x - mean_b.unsqueeze(-1), 0.0).square().sum((0, 2))
        n_a = int(self.global_count)
        mean_a = self.global_mean.double()
        m2_a = self.global_var.double() * n_a
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)
        var = (m2_a + m2_b + delta.square() * (n_a * n_b / n)) / n
        self.global_mean.copy_(mean)
        self.global_var.copy_(var)
        self.global_std.copy_(var.sqrt())
        self.global_count.fill_(n)

    @torch.no_grad()
    def fit_global_stats(self, feats: Tensor, feat_lens: Tensor) -> None:
        """Set the global statistics from one batch, discarding earlier ones.

        Same arguments as :meth:`accumulate_global_stats`.
        """
        self.reset_global_stats()
        self.accumulate_global_stats(feats, feat_lens)

    @torch.no_grad()
    def reset_global_stats(self) -> None:
        """Forget the global statistics (normalisation becomes the identity)."""
        if self.normalize != "global":
            raise RuntimeError(
                f"global statistics need normalize='global', not {self.normalize!r}"
            )
        self.global_mean.zero_()
        self.global_var.fill_(1.0)
        self.global_std.fill_(1.0)
        self.global_count.zero_()


class LogSpectrogram(Frontend):
    """DeepSpeech2's log power spectrogram: ``log(|STFT|^2 + eps)``.

    Defaults: 20 ms periodic Hann window, 10 ms hop, ``n_fft = win_length`` (at 16 kHz:
    320, 160, and ``F = 161`` bins from 0 to 8 kHz).

    Args:
        sample_rate: input sampling rate in Hz.
        win_length: window length in samples; ``None``: 20 ms.
        hop_length: frame shift in samples; ``None``: 10 ms.
        n_fft: FFT size; ``None``: ``win_length``.
        normalize: ``"utterance"``, ``"global"`` or ``"none"``.
        eps: added to the power before the natural logarithm.
    """

    kind = "spectrogram"

    def __init__(
        self,
        sample_rate: int = 16000,
        win_length: int | None = None,
        hop_length: int | None = None,
        n_fft: int | None = None,
        normalize: str = "utterance",
        eps: float = 1e-10,
    ) -> None:
        win_length = _samples(sample_rate, 20) if win_length is None else win_length
        hop_length = _samples(sample_rate, 10) if hop_length is None else hop_length
        n_fft = win_length if n_fft is None else n_fft
        super().__init__(sample_rate, n_fft, win_length, hop_length, normalize, eps)
        self._init_global_stats()

    @property
    def n_features(self) -> int:
        return self.n_fft // 2 + 1

    def _features(self, power: Tensor) -> Tensor:
        return torch.log(power + self.eps)


class LogMel(Frontend):
    """Log mel energies: ``log(mel_fb @ |STFT|^2 + eps)``.

    The filterbank is librosa's default, ``librosa.filters.mel(htk=False,
    norm="slaney")``: Slaney's mel scale (linear below 1 kHz, logarithmic above) and
    triangles scaled to equal area. Defaults: 80 bands from 0 Hz to Nyquist, 25 ms
    Hann window, 10 ms hop, ``n_fft = 512`` at 16 kHz.

    Args:
        sample_rate: input sampling rate in Hz.
        n_mels: number of mel bands ``F``.
        win_length: window length in samples; ``None``: 25 ms.
        hop_length: frame shift in samples; ``None``: 10 ms.
        n_fft: FFT size; ``None``: the smallest power of two ``>= win_length``.
        f_min: lowest filter edge in Hz.
        f_max: highest filter edge in Hz; ``None``: ``sample_rate / 2``.
        mel_scale: ``"slaney"`` or ``"htk"`` (torchaudio's names).
        mel_norm: ``"slaney"`` (equal-area triangles) or ``None`` (peak 1);
            torchaudio's ``norm`` of ``melscale_fbanks``, renamed because
            ``normalize`` means feature normalisation here.
        normalize: ``"utterance"``, ``"global"`` or ``"none"``.
        eps: added to the mel energies before the natural logarithm.
    """

    kind = "logmel"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_length: int | None = None,
        hop_length: int | None = None,
        n_fft: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
        mel_norm: str | None = "slaney",
        normalize: str = "utterance",
        eps: float = 1e-10,
    ) -> None:
        win_length = _samples(sample_rate, 25) if win_length is None else win_length
        hop_length = _samples(sample_rate, 10) if hop_length is None else hop_length
        if n_fft is None:
            n_fft = 1 << max(win_length - 1, 1).bit_length()
        super().__init__(sample_rate, n_fft, win_length, hop_length, normalize, eps)
        f_max = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, "
                f"f_max={f_max}, sample_rate={sample_rate}"
            )
        if mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
        if mel_norm not in ("slaney", None):
            raise ValueError(f"mel_norm must be 'slaney' or None, got {mel_norm!r}")
        self.n_mels = n_mels
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        # Stored in float32, transposed: (n_freqs, n_mels) -> (n_mels, n_freqs)
        import torchaudio.functional as AF  # only the mel frontends need torchaudio

        fb = AF.melscale_fbanks(
            n_freqs=n_fft // 2 + 1,
            f_min=self.f_min,
            f_max=self.f_max,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm=mel_norm,
            mel_scale=mel_scale,
        ).T.contiguous()
        self.register_buffer("mel_fb", fb.float(), persistent=False)
        self._init_global_stats()

    @property
    def n_features(self) -> int:
        return self.n_mels

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
        }

    def _mel_energies(self, power: Tensor) -> Tensor:
        """``(B, n_mels, T)`` mel energies from a ``(B, n_freqs, T)`` power spectrum."""
        return torch.matmul(self.mel_fb.float(), power)  # (M, K) @ (B, K, T)

    def _features(self, power: Tensor) -> Tensor:
        return torch.log(self._mel_energies(power) + self.eps)


class MFCC(LogMel):
    """Mel-frequency cepstral coefficients: orthonormal DCT-II of :class:`LogMel`.

    ``mfcc = dct(log(mel + eps), type=2, norm="ortho")[:n_mfcc]``, which is
    ``librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc)`` (``dct_type=2``,
    ``norm="ortho"``, no liftering). The log is natural, as Kaldi's; librosa's
    ``mfcc(y=...)`` takes decibels with an 80 dB floor instead, which scales the
    coefficients by ``10 / ln 10`` (removed by any normalisation) and clips the
    quietest bins. Other arguments as :class:`LogMel`.

    Args:
        n_mfcc: number of coefficients ``F`` (``<= n_mels``).
    """

    kind = "mfcc"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 40,
        n_mels: int = 80,
        win_length: int | None = None,
        hop_length: int | None = None,
        n_fft: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
        mel_norm: str | None = "slaney",
        normalize: str = "utterance",
        eps: float = 1e-10,
    ) -> None:
        if not 0 < n_mfcc <= n_mels:
            raise ValueError(f"need 0 < n_mfcc <= n_mels, got {n_mfcc} and {n_mels}")
        self.n_mfcc = n_mfcc  # before LogMel.__init__, which asks for n_features
        super().__init__(
            sample_rate=sample_rate,
            n_mels=n_mels,
            win_length=win_length,
            hop_length=hop_length,
            n_fft=n_fft,
            f_min=f_min,
            f_max=f_max,
            mel_scale=mel_scale,
            mel_norm=mel_norm,
            normalize=normalize,
            eps=eps,
        )
        # create_dct gives (n_mels, n_mfcc); stored transposed as (n_mfcc, n_mels).
        import torchaudio.functional as AF

        dct = AF.create_dct(n_mfcc, n_mels, norm="ortho").T.contiguous()
        self.register_buffer("dct", dct.float(), persistent=False)

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_mfcc": self.n_mfcc}

    def _features(self, power: Tensor) -> Tensor:
        log_mel = torch.log(self._mel_energies(power) + self.eps)  # (B, n_mels, T)
        return torch.matmul(self.dct.float(), log_mel)  # (C, M) @ (B, M, T)


FRONTENDS: dict[str, type[Frontend]] = {
    LogSpectrogram.kind: LogSpectrogram,
    LogMel.kind: LogMel,
    MFCC.kind: MFCC,
}


def build_frontend(
    config: Mapping[str, Any] | None = None, /, **kwargs: Any
) -> Frontend:
    """Build a frontend from a :meth:`Frontend.config` dict and/or keyword arguments.

    ``build_frontend(frontend.config())``, ``build_frontend(kind="logmel", n_mels=64)``
    and ``build_frontend({"kind": "mfcc"}, sample_rate=8000)`` all work; keyword
    arguments override the dict. ``kind`` is one of :data:`FRONTENDS`
    (``"spectrogram"``, ``"logmel"``, ``"mfcc"``), default ``"spectrogram"``.

    Raises:
        ValueError: an unknown ``kind``.
        TypeError: an argument the chosen frontend does not take.
    """
    args = {**(config or {}), **kwargs}
    kind = args.pop("kind", LogSpectrogram.kind)
    if kind not in FRONTENDS:
        raise ValueError(
            f"unknown frontend kind {kind!r}; expected one of {sorted(FRONTENDS)}"
        )
    return FRONTENDS[kind](**args)
