"""Channel effects of the synthetic corpus (asr.synthetic.channel): level, noise,
reverb, and the phones carried into the recording's time."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from asr.synthetic.channel import Channel, render_speech, room_impulse_response
from asr.synthetic.phones import Speech
from asr.synthetic.speakers import make_speaker, random_channel

CHANNEL = Channel(
    level_dbfs=-24.0,
    highpass_hz=50.0,
    lowpass_hz=None,
    eq_hz=1000.0,
    eq_gain_db=0.0,
    eq_q=1.0,
    reverb_rt60_s=None,
    reverb_drr_db=10.0,
    reverb_predelay_s=0.01,
    snr_db=25.0,
    noise_color="white",
    seed=0,
)


def _db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(x.astype(np.float64) ** 2)))


def test_render_sets_level_and_snr() -> None:
    """The speech comes out at the channel's level, the noise at level - SNR."""
    engine_rate = 22050
    t = np.arange(engine_rate) / engine_rate  # one second of a vowel-like tone
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    audio = np.concatenate([np.zeros(engine_rate // 2), 0.3 * tone, np.zeros(4000)])
    speech = Speech(audio, engine_rate, ())

    def render(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return render_speech(speech, CHANNEL, 1.0, 16000, rng)[0]

    y = render(0)
    assert y.dtype == np.float32 and np.abs(y).max() <= 0.98
    # The engine's leading 0.5 s of silence is trimmed and 0.10-0.35 s padded.
    assert 1.2 <= len(y) / 16000 <= 1.75
    assert _db(y[:1500]) == pytest.approx(-24.0 - 25.0, abs=1.5)  # padding: noise
    middle = y[len(y) // 2 - 4000 : len(y) // 2 + 4000]
    assert _db(middle) == pytest.approx(-24.0, abs=1.0)
    # Same generator seed, same samples; another seed, other noise.
    again, other = render(0), render(1)
    assert np.array_equal(y, again)
    assert not np.array_equal(y[:1000], other[:1000])


def test_render_speech_maps_phones_to_the_recording() -> None:
    """Phone times follow the trim, the lead-in silence and the speed factor."""
    speaker = make_speaker(1000, "train", "espeak-ng", "en-us", "", 0)
    dry = dataclasses.replace(
        speaker.channel, lowpass_hz=None, reverb_rt60_s=None, snr_db=40.0
    )
    rate = 22050
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 200 * t)
    # 0.5 s of silence (trimmed), 0.5 s "aa", 0.5 s "s", 0.3 s of silence.
    audio = np.concatenate([np.zeros(rate // 2), tone, np.zeros(int(0.3 * rate))])
    phones = (("sil", 0.0, 0.5), ("aa", 0.5, 1.0), ("s", 1.0, 1.5), ("sil", 1.5, 1.8))
    speech = Speech(audio, rate, phones)
    y, mapped = render_speech(speech, dry, 1.25, 16000, np.random.default_rng(0))
    labels = [p[0] for p in mapped]
    assert labels == ["aa", "s"]  # the silences were trimmed away
    lead = mapped[0][1]
    assert 0.10 <= lead <= 0.35  # the lead-in padding
    assert mapped[0][2] - lead == pytest.approx(0.5 / 1.25, abs=1e-3)
    assert mapped[1][1] == mapped[0][2]
    assert mapped[1][2] - mapped[1][1] == pytest.approx(0.5 / 1.25, abs=1e-3)
    assert mapped[1][2] <= len(y) / 16000

    # The tone is where the phones say it is.
    def level(a: float, b: float) -> float:
        return _db(y[int(a * 16000) : int(b * 16000)])

    assert level(lead + 0.05, mapped[1][2] - 0.05) > level(0.0, lead - 0.02) + 20


def test_room_impulse_response_drr() -> None:
    channel = dataclasses.replace(
        random_channel(np.random.default_rng(0)),
        reverb_rt60_s=0.3,
        reverb_drr_db=8.0,
    )
    ir = room_impulse_response(channel, 16000)
    assert ir is not None and ir[0] == 1.0
    tail_energy = float(np.sum(ir[1:] ** 2))
    assert 10 * math.log10(1.0 / tail_energy) == pytest.approx(8.0, abs=0.1)
    dry = dataclasses.replace(channel, reverb_rt60_s=None)
    assert room_impulse_response(dry, 16000) is None
