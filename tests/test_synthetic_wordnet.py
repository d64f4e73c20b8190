"""The synthetic corpus's text source (asr.synthetic.wordnet): WordNet's usage
examples cleaned to what an engine says as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asr.synthetic.errors import CorpusError
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR, clean_sentence, load_sentences

TRANSCRIPT = re.compile(r"^[A-Z']+( [A-Z']+)*$")


@pytest.mark.parametrize(
    ("raw", "transcript"),
    [
        ("don't stop the music", "DON'T STOP THE MUSIC"),
        ("a well-known author", "A WELL KNOWN AUTHOR"),
        ("the boys' toys were broken", "THE BOYS' TOYS WERE BROKEN"),
        ("I hope so; she left early!", "I HOPE SO SHE LEFT EARLY"),
        ("he ran  --  fast", "HE RAN FAST"),
        ("Mr. Smith arrived late", None),  # abbreviation
        ("the U.S. army", None),  # initials
        ("NATO forces landed", None),  # acronym: the engines spell it
        ("Henry VIII was king", None),  # Roman numeral
        ("I saw 3 cats", None),  # digit
        ("`It's funny,' he said", None),  # nested quotation
        ("hmm that is odd", None),  # no vowel: spelled out
        ("vitamin C deficiency", None),  # a lone letter
        ("books etc were sold", None),  # expanded to "et cetera"
        ("wonderful", None),  # one word
        ("café au lait", None),  # not ASCII
        (" ".join(["word"] * 26), None),  # too long
    ],
)
def test_clean_sentence(raw: str, transcript: str | None) -> None:
    sentence = clean_sentence(raw, min_words=2, max_words=25)
    assert (sentence and sentence.transcript) == transcript
    if sentence is not None:
        # The engine reads the same words, with punctuation kept for prosody.
        assert re.sub(r"[^A-Za-z' ]", " ", sentence.prompt).upper().split() == (
            transcript.split()
        )
        assert sentence.prompt[-1] in ".!?"


@pytest.mark.skipif(
    not (DEFAULT_WORDNET_DIR / "data.noun").is_file(),
    reason="needs wordnet (make setup installs it)",
)
def test_wordnet_sentences_are_clean_and_unique() -> None:
    sentences = load_sentences(DEFAULT_WORDNET_DIR, 2, 25)
    assert len(sentences) > 30000
    transcripts = [s.transcript for s in sentences]
    assert len(set(transcripts)) == len(transcripts)
    for t in transcripts:
        assert TRANSCRIPT.match(t), t
        assert 2 <= len(t.split()) <= 25, t


def test_missing_wordnet_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"data\.noun"):
        load_sentences(tmp_path, 2, 25)
