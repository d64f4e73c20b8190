"""Channel effects: what turns an engine's clean output into a speaker's recording.

Each speaker has a fixed :class:`Channel` (drawn in :mod:`asr.synthetic.speakers`):
gain, high-pass, an optional low-pass (down to telephone band), one peaking EQ band
of +-6 dB, optional room reverb (RT60 0.15-0.5 s, direct-to-reverberant 4-14 dB) and
white, pink or brown noise at 20-40 dB SNR. :func:`render_speech` applies it, with
the speaker's resampling speed factor; each utterance gets its own leading/trailing
silence and noise draw.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from asr.synthetic.errors import SynthesisError
from asr.synthetic.phones import Segment, Speech

__all__ = ["Channel", "channel_filter", "render_speech", "room_impulse_response"]


@dataclass(frozen=True)
class Channel:
    """A speaker's fixed recording channel. Frequencies in Hz, levels in dB."""

    level_dbfs: float  # RMS of the active speech, dB re full scale
    highpass_hz: float
    lowpass_hz: float | None
    eq_hz: float
    eq_gain_db: float
    eq_q: float
    reverb_rt60_s: float | None
    reverb_drr_db: float  # direct-to-reverberant energy ratio
    reverb_predelay_s: float
    snr_db: float
    noise_color: str  # "white", "pink" or "brown"
    seed: int  # for the room impulse response


@functools.lru_cache(maxsize=64)
def room_impulse_response(channel: Channel, sample_rate: int) -> np.ndarray | None:
    """A synthetic room: a direct path, a pre-delay, then exponentially decaying noise.

    Returns ``(n,)`` float64 at ``sample_rate`` Hz, or None for a dry channel. The tail
    decays by 60 dB over ``reverb_rt60_s`` and carries ``reverb_drr_db`` less energy
    than the direct path.
    """
    if channel.reverb_rt60_s is None:
        return None
    rng = np.random.default_rng(channel.seed)
    n_tail = int(channel.reverb_rt60_s * sample_rate)
    t = np.arange(n_tail) / sample_rate
    tail = rng.standard_normal(n_tail) * np.exp(-6.91 * t / channel.reverb_rt60_s)
    tail *= math.sqrt(10 ** (-channel.reverb_drr_db / 10) / np.sum(tail**2))
    delay = int(channel.reverb_predelay_s * sample_rate)
    ir = np.zeros(delay + n_tail)
    ir[0] = 1.0
    ir[delay:] += tail
    ir.setflags(write=False)  # shared through the cache
    return ir


@functools.lru_cache(maxsize=64)
def channel_filter(channel: Channel, sample_rate: int) -> np.ndarray:
    """The channel's high-pass, low-pass and EQ as ``(sections, 6)`` SOS at
    ``sample_rate`` Hz (bands above the Nyquist frequency are left out)."""
    nyquist = sample_rate / 2
    hp = min(channel.highpass_hz, 0.2 * nyquist)
    sos = [signal.butter(2, hp, "highpass", fs=sample_rate, output="sos")]
    if channel.lowpass_hz is not None and channel.lowpass_hz < 0.95 * nyquist:
        lowpass = signal.butter(4, channel.lowpass_hz, fs=sample_rate, output="sos")
        sos.append(lowpass)
    if channel.eq_hz < 0.9 * nyquist:
        eq = _peaking_sos(channel.eq_hz, channel.eq_gain_db, channel.eq_q, sample_rate)
        sos.append(eq)
    return np.concatenate(sos)


def _peaking_sos(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """A peaking EQ band (``freq`` Hz, ``gain_db`` dB, quality ``q``) as ``(1, 6)``
    SOS; the RBJ audio-EQ cookbook's biquad."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq / sample_rate
    alpha = math.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a]
    return np.array([[*(x / den[0] for x in b), 1.0, den[1] / den[0], den[2] / den[0]]])


def _colored_noise(color: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` noise with unit RMS and a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)
    power spectrum."""
    white = rng.standard_normal(n)
    if color != "white":
        exponent = {"pink": 0.5, "brown": 1.0}[color]  # amplitude ~ f^-exponent
        spectrum = np.fft.rfft(white)
        spectrum[0] = 0.0  # no DC offset
        freqs = np.fft.rfftfreq(n)
        freqs[0] = 1.0
        white = np.fft.irfft(spectrum / freqs**exponent, n)
    return white / max(float(np.sqrt(np.mean(white**2))), 1e-12)


def _active_power(x: np.ndarray, sample_rate: int) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest one (the level of
    the speech, not of the pauses around it)."""
    hop = max(1, sample_rate // 50)
    n = len(x) // hop
    if n == 0:
        return float(np.mean(x**2)) if len(x) else 0.0
    power = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    active = power[power >= power.max() * 1e-4]
    return float(np.mean(active))


def _trim(x: np.ndarray, sample_rate: int, threshold_db: float = -45.0) -> slice:
    """The part of ``x`` left after cutting leading and trailing 10 ms frames quieter
    than ``threshold_db`` re peak."""
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n == 0:
        return slice(0, len(x))
    peak = np.abs(x[: n * hop]).reshape(n, hop).max(axis=1)
    loud = np.nonzero(peak >= peak.max() * 10 ** (threshold_db / 20))[0]
    return slice(int(loud[0]) * hop, (int(loud[-1]) + 1) * hop)


def render_speech(
    speech: Speech,
    channel: Channel,
    speed: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[Segment, ...]]:
    """Turn an engine's output into a speaker's recording, and its phones into the
    recording's time.

    ``speech.audio`` is ``(n,)`` float at ``speech.sample_rate`` Hz; returns ``(m,)``
    float32 at ``sample_rate`` Hz in [-1, 1] and the phones (seconds in the
    recording, cut to the speech kept). Steps: trim the engine's silences, resample
    with the ``speed`` factor (> 1: faster and higher, like a shorter vocal tract),
    pad with 0.1-0.35 s of silence each side, high-pass, low-pass, EQ, reverb, set
    the level, add noise at the channel's SNR, limit peaks. ``rng`` draws this
    utterance's padding and noise; the rest is fixed by ``channel``.

    Raises:
        SynthesisError: the engine said under 0.2 s, or nothing audible.
    """
    engine_rate = speech.sample_rate
    ch = channel
    x = np.asarray(speech.audio, dtype=np.float64)
    kept = _trim(x, engine_rate)
    x = x[kept]
    if len(x) < 0.2 * engine_rate:
        raise SynthesisError(f"the engine said {len(x) / engine_rate:.2f} s only")
    # Read as if recorded at engine_rate * speed: faster and higher when speed > 1.
    x = soxr.resample(x, engine_rate * speed, sample_rate)
    pads = rng.uniform(0.10, 0.35, size=2)
    lead = int(pads[0] * sample_rate)
    # Engine time t -> recording time: past the lead-in, sped up by the speed factor.
    t0, t1 = kept.start / engine_rate, kept.stop / engine_rate
    shift = lead / sample_rate
    phones = tuple(
        (
            label,
            round(shift + (max(a, t0) - t0) / speed, 4),
            round(shift + (min(b, t1) - t0) / speed, 4),
        )
        for label, a, b in speech.phones
        if min(b, t1) - max(a, t0) >= 0.01  # slivers left by the 10 ms trim: dropped
    )
    x = np.concatenate([np.zeros(lead), x, np.zeros(int(pads[1] * sample_rate))])
    x = signal.sosfilt(channel_filter(ch, sample_rate), x)
    ir = room_impulse_response(ch, sample_rate)
    if ir is not None:
        tail = min(len(ir) - 1, int(0.2 * sample_rate))
        x = signal.fftconvolve(x, ir)[: len(x) + tail]
    power = _active_power(x, sample_rate)
    if power <= 0:
        raise SynthesisError("the engine's output is silent")
    x *= math.sqrt(10 ** (ch.level_dbfs / 10) / power)
    noise_power = 10 ** ((ch.level_dbfs - ch.snr_db) / 10)
    x += math.sqrt(noise_power) * _colored_noise(ch.noise_color, len(x), rng)
    peak = float(np.max(np.abs(x)))
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32), phones
