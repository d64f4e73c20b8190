"""asr.text: normalization, unspellable characters, the character tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asr.text import VOCAB, CharTokenizer, TextError, normalize, unspellable


def test_vocab_layout() -> None:
    assert VOCAB[0] == "<blank>"
    assert VOCAB[1:3] == (" ", "'")
    assert "".join(VOCAB[3:]) == "abcdefghijklmnopqrstuvwxyz"
    assert len(VOCAB) == 29


@pytest.mark.parametrize(
    "text,expected",
    [
        ("HELLO WORLD", "hello world"),
        ("Hello, World!", "hello world"),
        ("  many   spaces\tand\ttabs\n", "many spaces and tabs"),
        ("Café déjà vu, naïve Zoë", "cafe deja vu naive zoe"),
        ("ÅNGSTRÖM", "angstrom"),
        ("İstanbul", "istanbul"),
        ("ﬁne ligature", "fine ligature"),
        ("don’t ‘quote’ me", "don't quote me"),
        ("``backticks''", "backticks"),
        ("it`s", "it's"),
        ("'Tis the dogs' bone", "tis the dogs bone"),  # free text: quotes
        ("'TWAS THE FATHERS' DOG", "'twas the fathers' dog"),  # transcript form
        ("'twas the fathers' dog", "'twas the fathers' dog"),
        ("A WITCHES' BREW", "a witches' brew"),
        ("“Stop,” he said — twice…", "stop he said twice"),
        ("well-known state–of—the-art", "well known state of the art"),
        ('a.b,c;d:e!f?g"h(i)j[k]l{m}n/o…p', "a b c d e f g h i j k l m n o p"),
        ("Rock 'n' roll", "rock n roll"),
        ("ROCK 'N' ROLL", "rock 'n' roll"),
        ("' lone quote '", "lone quote"),
        ("zero\u200bwidth\ufeff soft\u00adhyphen", "zerowidth softhyphen"),
        ("non\u00a0breaking", "non breaking"),
        ("", ""),
        ("?!...", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_is_idempotent() -> None:
    for text in ["Don’t — STOP!", "Zoë's 50% off", "'a' 'b'", "'TWAS THE FATHERS'"]:
        once = normalize(text)
        assert normalize(once) == once


@pytest.mark.parametrize(
    "text,kept",
    [
        ("I paid $50 & 10% tax", "i paid $50 & 10% tax"),
        ("mail me @ home", "mail me @ home"),
        ("Ωmega", "ωmega"),
        ("straße", "straße"),
        ("日本", "日本"),
        ("x²", "x2"),  # NFKD: superscript two is the digit 2
    ],
)
def test_normalize_keeps_what_the_vocabulary_cannot_spell(text: str, kept: str) -> None:
    assert normalize(text) == kept


def test_unspellable() -> None:
    assert unspellable("I paid $50 & 10% tax") == ["$", "%", "&", "0", "1", "5"]
    assert unspellable("Ωmega straße") == ["ß", "ω"]
    assert unspellable("Perfectly FINE, isn't it?") == []
    assert unspellable("") == []


# ------------------------------------------------------------------------ tokenizer


def test_tokenizer_basics() -> None:
    tok = CharTokenizer()
    assert tok.blank == 0 and tok.vocab == VOCAB and len(tok) == 29
    assert tok.encode("ab c'd") == [3, 4, 1, 5, 2, 6]
    assert tok.encode("Hello, World!") == tok.encode("hello world")
    assert tok.decode(tok.encode("it's a test")) == "it's a test"
    assert 0 not in tok.encode("the quick brown fox jumps over the lazy dog")


def test_encode_without_normalization() -> None:
    tok = CharTokenizer()
    assert tok.encode("ab", normalize_text=False) == [3, 4]
    with pytest.raises(TextError, match="'A'"):
        tok.encode("Ab", normalize_text=False)


def test_encode_names_the_characters_and_the_text() -> None:
    tok = CharTokenizer()
    with pytest.raises(TextError) as info:
        tok.encode("I have 50% more")
    message = str(info.value)
    assert "'I have 50% more'" in message
    assert "'%', '0', '5'" in message
    assert isinstance(info.value, ValueError)


def test_decode_drops_blanks_without_collapsing() -> None:
    tok = CharTokenizer()
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    assert tok.decode([0, a, a, 0, b]) == "aab"
    assert tok.decode([]) == ""


def test_decode_accepts_tensors_and_arrays() -> None:
    tok = CharTokenizer()
    ids = tok.encode("hi there")
    assert tok.decode(torch.tensor(ids)) == "hi there"
    assert tok.decode(np.array(ids, dtype=np.int64)) == "hi there"


def test_decode_rejects_bad_ids() -> None:
    tok = CharTokenizer()
    with pytest.raises(TextError, match="id 29"):
        tok.decode([3, 29])
    with pytest.raises(TextError, match="id -1"):
        tok.decode([-1])
    with pytest.raises(TextError, match="1-D"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))


def test_ctc_collapse_merges_repeats_then_drops_blanks() -> None:
    tok = CharTokenizer()
    h, e, l, o = (tok.encode(c)[0] for c in "helo")  # noqa: E741
    frames = [0, h, h, 0, e, l, l, 0, l, o, o, 0, 0]
    assert tok.ctc_collapse(frames) == [h, e, l, l, o]
    assert tok.ctc_decode(frames) == "hello"
    assert tok.ctc_decode(torch.tensor(frames)) == "hello"
    # without the blank between them the two l's merge
    assert tok.ctc_decode([h, e, l, l, o]) == "helo"
    assert tok.ctc_collapse([0, 0, 0]) == []
    assert tok.ctc_collapse([]) == []


def test_dict_round_trip_through_json() -> None:
    tok = CharTokenizer()
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "char", "vocab": list(VOCAB)}
    again = CharTokenizer.from_dict(d)
    assert again == tok and again.vocab == VOCAB
    assert again.encode("round trip") == tok.encode("round trip")


def test_from_dict_refuses_unknown_or_malformed() -> None:
    with pytest.raises(TextError, match="unknown tokenizer type 'bpe'"):
        CharTokenizer.from_dict({"type": "bpe", "vocab": ["<blank>", "a"]})
    with pytest.raises(TextError, match="unknown tokenizer type None"):
        CharTokenizer.from_dict({"vocab": list(VOCAB)})
    with pytest.raises(TextError, match="'vocab' list"):
        CharTokenizer.from_dict({"type": "char"})
    with pytest.raises(TextError, match="dict"):
        CharTokenizer.from_dict(["char"])  # type: ignore[arg-type]


def test_custom_vocabulary_and_its_checks() -> None:
    tok = CharTokenizer(["<b>", "a", "b", " "])
    assert len(tok) == 4
    assert tok.encode("Ba a") == [2, 1, 3, 1]
    assert tok.unknown_characters("abc!") == ["c"]
    with pytest.raises(TextError, match="duplicate"):
        CharTokenizer(["<blank>", "a", "a"])
    with pytest.raises(TextError, match="one character"):
        CharTokenizer(["<blank>", "ab"])
    with pytest.raises(TextError, match="needs a blank"):
        CharTokenizer(["<blank>"])
