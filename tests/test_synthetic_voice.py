"""asr.synthetic.voice (``asr data synthetic-voice``): more speech of one speaker of
a corpus, the same voice, on sentences no dev or test speaker says."""

from __future__ import annotations

import json

import pytest
from test_synthetic_corpus import _generate, requires_tts

from asr.cli import main
from asr.manifest import librispeech_manifest
from asr.synthetic.errors import CorpusError
from asr.synthetic.voice import generate_voice


@requires_tts
@pytest.mark.slow
def test_one_test_voice_says_sentences_the_corpus_holds_out(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _generate(corpus)
    held = {
        u.text
        for split in ("dev", "test")
        for u in librispeech_manifest(corpus / split)
    }
    voices = json.loads((corpus / "voices.json").read_text())["speakers"]
    speaker = next(v for v in voices if v["split"] == "test")["speaker"]
    out = tmp_path / "voice"
    code = main(
        ["data", "synthetic-voice", str(corpus), str(out), "--speaker", speaker,
         "--minutes", "0.1", "--dev-minutes", "0.05", "--jobs", "1"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    train, dev = (librispeech_manifest(out / split) for split in ("train", "dev"))
    assert train and dev
    assert {u.speaker for u in train + dev} == {speaker}
    assert sum(u.duration for u in train) > 3
    texts = [u.text for u in train + dev]
    assert len(set(texts)) == len(texts) and not set(texts) & held
    assert all(
        u.phones_filepath for u in train
    )  # the engines' phones, as in the corpus
    with pytest.raises(CorpusError, match="no speaker '1'"):
        generate_voice(corpus, "1", tmp_path / "x")
    # a corpus whose recorded speaker differs from what a re-plan gives is refused
    for v in voices:
        if v["speaker"] == speaker:
            v["channel"]["snr_db"] += 1
    data = json.loads((corpus / "voices.json").read_text())
    data["speakers"] = voices
    (corpus / "voices.json").write_text(json.dumps(data))
    with pytest.raises(CorpusError, match="cannot be remade"):
        generate_voice(corpus, speaker, tmp_path / "y")
