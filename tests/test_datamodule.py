"""asr.datamodule: manifests are validated before training; problems stop it unless
skipping is asked for, and are never dropped silently."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from asr.datamodule import ASRDataModule, InvalidDataError


def manifest(tmp_path, *records: dict | str):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def bad_manifest(tmp_path):
    t = np.arange(8000) / 16000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    sf.write(tmp_path / "long.wav", np.zeros(90 * 16000, np.int16), 16000)
    good = {"audio_filepath": "a.wav", "duration": 0.5, "text": "hi", "id": "good"}
    return manifest(
        tmp_path,
        good,
        '{"audio_filepath": "a.wav"',  # 2: invalid JSON
        {**good, "audio_filepath": "missing.wav", "id": "missing"},  # 3
        {**good, "text": "50%", "id": "digits"},  # 4
        # 5: over max_batch_seconds
        {**good, "audio_filepath": "long.wav", "duration": 90.0, "id": "hour"},
    )


def test_problems_stop_training_by_default_and_name_asr_validate(bad_manifest):
    data = ASRDataModule(train_manifest=str(bad_manifest), max_batch_seconds=60)
    assert data.hparams.skip_invalid is False
    with pytest.raises(InvalidDataError) as info:
        data.setup("fit")
    message = str(info.value)
    assert message.startswith(f"{bad_manifest}: 5 utterances checked: 1 kept, 4 with")
    for line in (2, 3, 4, 5):
        assert f"{bad_manifest}:{line}: " in message
    assert "90 s is longer than the limit of 60 s" in message
    assert f"`asr validate {bad_manifest}`" in message
    assert "data.skip_invalid: true" in message


def test_skipping_leaves_them_out_with_a_warning(bad_manifest, caplog):
    data = ASRDataModule(
        train_manifest=str(bad_manifest), max_batch_seconds=60, skip_invalid=True
    )
    with caplog.at_level(logging.WARNING, logger="asr.datamodule"):
        data.setup("fit")
    assert [u.id for u in data._sets["train"]] == ["good"]
    assert f"{bad_manifest}:3: missing" in caplog.text
    assert "left out (data.skip_invalid is true)" in caplog.text
    # max_duration overrides the batch budget as the limit.
    data = ASRDataModule(
        train_manifest=str(bad_manifest), max_duration=1000, skip_invalid=True
    )
    data.setup("fit")
    assert [u.id for u in data._sets["train"]] == ["good", "hour"]


def test_nothing_usable_is_an_error_even_when_skipping(tmp_path):
    path = manifest(tmp_path, {"audio_filepath": "x.wav", "duration": 1, "text": "a"})
    data = ASRDataModule(train_manifest=str(path), skip_invalid=True)
    with pytest.raises(InvalidDataError, match="no usable utterance"):
        data.setup("fit")


def test_a_cap_on_utterance_length_leaves_longer_ones_out_of_training(
    bad_manifest, caplog
):
    """deepspeech.pytorch's cap (data.max_utterance_seconds): utterances longer than
    it are left out of training and counted, without being called problems."""
    data = ASRDataModule(
        train_manifest=str(bad_manifest),
        val_manifest=str(bad_manifest),
        max_duration=1000,
        skip_invalid=True,
        max_utterance_seconds=15,
    )
    with caplog.at_level(logging.INFO, logger="asr.datamodule"):
        data.setup("fit")
    assert [u.id for u in data._sets["train"]] == ["good"]
    assert [u.id for u in data._sets["val"]] == ["good", "hour"]  # kept whole
    assert "1 utterances longer than data.max_utterance_seconds (15 s) left out" in (
        caplog.text
    )
