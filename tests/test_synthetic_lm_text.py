"""The synthetic recipe's LM text (asr.synthetic.lm_text, ``asr data
synthetic-lm-text``): the training text plus WordNet's other examples, never a
held-out sentence's synset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asr.cli import main
from asr.synthetic.lm_text import write_lm_text

HEADER = "  1 This software and database is being provided to you, the LICENSEE\n"
NOUNS = [
    # a test sentence's synset: both of its examples stay out
    '00000001 03 n 01 flower 0 000 | a plant; "pentamerous flowers"; '
    '"the flowers of the tree"',
    # a training sentence's synset: kept whole
    '00000002 03 n 01 boat 0 000 | a small vessel; "each oar was tugged by several '
    'men"; "the boat sank"',
    # nothing spoken from it: its examples are the new text
    '00000003 03 n 01 river 0 000 | a stream; "the river rose after the storm"; '
    '"we swam across the river"',
    # the generator's cleaning applies: digits and acronyms drop the example
    '00000004 03 n 01 year 0 000 | a period; "in 1990 it rained"; "the NATO forces"; '
    '"a wet year"',
]
VERBS = [
    # a dev sentence, cleaned to the manifest's form before comparing
    '00000005 29 v 01 run 0 000 | move fast; "She ran home."; "run along"',
    # a possessive plural: the manifest says "the boys' games" (LibriSpeech's form)
    '00000007 29 v 01 play 0 000 | take part; "the boys\' games"; "play ball"',
    # a duplicate of a training transcript in another synset: written once
    '00000006 29 v 01 sink 0 000 | go down; "the boat sank"',
]


@pytest.fixture()
def wordnet(tmp_path: Path) -> Path:
    root = tmp_path / "wordnet"
    root.mkdir()
    for pos, lines in (("noun", NOUNS), ("verb", VERBS), ("adj", []), ("adv", [])):
        (root / f"data.{pos}").write_text(
            HEADER + "".join(line + "  \n" for line in lines), encoding="latin-1"
        )
    return root


def _manifest(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"audio_filepath": f"{i}.flac", "duration": 1.0, "text": t})
            + "\n"
            for i, t in enumerate(texts)
        )
    )
    return path


def test_training_text_plus_wordnet_without_held_out_synsets(
    wordnet: Path, tmp_path: Path
) -> None:
    train = _manifest(tmp_path / "train.jsonl", ["each oar was tugged by several men"])
    dev = _manifest(tmp_path / "dev.jsonl", ["she ran home", "the boys' games"])
    test = _manifest(tmp_path / "test.jsonl", ["pentamerous flowers"])
    out = tmp_path / "lm" / "lm_text.txt"
    s = write_lm_text(out, [train], [dev, test], wordnet_dir=wordnet)
    assert out.read_text().splitlines() == [
        "each oar was tugged by several men",
        "the boat sank",
        "the river rose after the storm",
        "we swam across the river",
        "a wet year",
    ]
    assert (s.included, s.added, s.held_out_synsets, s.held_out_sentences) == (
        1,
        4,
        3,
        3,
    )
    assert not list(out.parent.glob("*.partial"))


def test_training_text_is_kept_even_in_a_held_out_synset(
    wordnet: Path, tmp_path: Path
) -> None:
    # The split is by sentence: a training sentence may share a synset with a test one.
    train = _manifest(tmp_path / "train.jsonl", ["the flowers of the tree"])
    test = _manifest(tmp_path / "test.jsonl", ["pentamerous flowers"])
    out = tmp_path / "lm_text.txt"
    write_lm_text(out, [train], [test], wordnet_dir=wordnet)
    lines = out.read_text().splitlines()
    assert lines[0] == "the flowers of the tree"
    assert "pentamerous flowers" not in lines


def test_cli_and_its_errors(
    wordnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _manifest(tmp_path / "train.jsonl", ["the boat sank"])
    out = tmp_path / "lm_text.txt"
    cmd = ["data", "synthetic-lm-text", "-o", str(out), "--wordnet-dir", str(wordnet)]

    def run(*args: str) -> tuple[int, str, str]:
        status = main([*cmd, *args])
        done = capsys.readouterr()
        return status, done.out, done.err

    status, stdout, stderr = run("--include", str(train))
    assert status == 0, stderr
    assert "1 from the included manifests" in stdout
    assert out.read_text().splitlines()[0] == "the boat sank"

    def error(*args: str) -> str:
        """The one line on stderr of a run that must fail with status 1."""
        status, _, stderr = run(*args)
        assert status == 1
        assert stderr.startswith("asr data synthetic-lm-text: error: "), stderr
        assert stderr.count("\n") == 1, stderr
        return stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"audio_filepath": "x.flac"}\n')
    assert f"{bad}:2: not a manifest line with a text" in error("--exclude", str(bad))

    blocked = train / "lm_text.txt"  # a path under a file
    assert f"{blocked}: cannot write the LM text" in error("-o", str(blocked))

    binary = tmp_path / "audio.flac"
    binary.write_bytes(b"fLaC\x00\x00\x00\x22\xff\xfe")
    assert f"{binary}: not UTF-8 text" in error("--include", str(binary))

    missing = tmp_path / "nowhere.jsonl"
    assert f"{missing}: cannot read manifest" in error("--include", str(missing))

    nowhere = str(tmp_path / "x")
    assert "data.noun: cannot read WordNet data" in error("--wordnet-dir", nowhere)
