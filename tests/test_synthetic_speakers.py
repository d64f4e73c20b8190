"""Synthetic speakers (asr.synthetic.speakers): parameters drawn from the seed."""

from __future__ import annotations

import pytest

from asr.synthetic.speakers import TRAIN_SPEED, make_speaker
from asr.synthetic.voices import FLITE


def test_training_speakers_range_wider_in_vocal_tract_at_the_same_tempo() -> None:
    """Training speakers' resampling factor spans 0.84-1.12, held-out speakers'
    +-6 %; the engine tempo absorbs it, so the speaking rate (engine tempo x speed)
    is drawn alike for all. Everything else is drawn as for a held-out speaker."""
    ids = range(400)
    speakers = {
        split: [make_speaker(i, split, FLITE, "awb", "", 0) for i in ids]
        for split in ("train", "test")
    }
    train = [s.speed for s in speakers["train"]]
    held = [s.speed for s in speakers["test"]]
    assert TRAIN_SPEED[0] <= min(train) < 0.86 and 1.10 < max(train) <= 1.12
    assert 0.94 <= min(held) and max(held) <= 1.06
    for t, h in zip(speakers["train"], speakers["test"], strict=True):
        assert t.channel == h.channel and t.pitch == h.pitch  # same draws...
        assert t.rate * t.speed == pytest.approx(h.rate * h.speed, rel=2e-3)  # tempo


def test_engine_args_are_each_engines_own_settings() -> None:
    espeak = make_speaker(1000, "train", "espeak-ng", "en-us", "m3", 0)
    args = espeak.engine_args()
    assert args["-v"] == "en-us+m3" and args["-a"] == 60
    assert args["-s"] == round(175 * espeak.rate) and 0 <= args["-p"] <= 99
    assert espeak.base_voice == "espeak-ng:en-us+m3"
    hts = make_speaker(1001, "train", "festival", "cmu_us_slt_arctic_hts", "", 0)
    assert hts.engine_args() == {"hts -r": round(hts.rate, 4)} and hts.pitch == 1.0
    kal = make_speaker(1002, "train", "festival", "kal_diphone", "", 0)
    assert kal.engine_args()["Duration_Stretch"] == round(1.1 / kal.rate, 4)
