"""The synthetic recipe's LM text (tools/wordnet_lm_text.py): the training text plus
WordNet's other examples, never a held-out sentence's synset."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "wordnet_lm_text.py"


def _load_tool() -> types.ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("wordnet_lm_text", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wlt = _load_tool()

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
    # a possessive plural: the manifest says "the boys games"
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
    dev = _manifest(tmp_path / "dev.jsonl", ["she ran home", "the boys games"])
    test = _manifest(tmp_path / "test.jsonl", ["pentamerous flowers"])
    out = tmp_path / "lm" / "lm_text.txt"
    s = wlt.write_lm_text(out, [train], [dev, test], wordnet_dir=wordnet)
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
    wlt.write_lm_text(out, [train], [test], wordnet_dir=wordnet)
    lines = out.read_text().splitlines()
    assert lines[0] == "the flowers of the tree"
    assert "pentamerous flowers" not in lines


def test_cli_and_its_errors(wordnet: Path, tmp_path: Path) -> None:
    train = _manifest(tmp_path / "train.jsonl", ["the boat sank"])
    out = tmp_path / "lm_text.txt"
    cmd = [sys.executable, str(SCRIPT), "-o", str(out), "--wordnet-dir", str(wordnet)]
    done = subprocess.run(
        [*cmd, "--include", str(train)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "1 from the included manifests" in done.stdout
    assert out.read_text().splitlines()[0] == "the boat sank"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"audio_filepath": "x.flac"}\n')
    done = subprocess.run(
        [*cmd, "--exclude", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert f"{bad}:2: not a manifest line with a text" in done.stderr

    blocked = train / "lm_text.txt"  # a path under a file
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "-o",
            str(blocked),
            "--wordnet-dir",
            str(wordnet),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert f"{blocked}: cannot write the LM text" in done.stderr
    assert "Traceback" not in done.stderr

    binary = tmp_path / "audio.flac"
    binary.write_bytes(b"fLaC\x00\x00\x00\x22\xff\xfe")
    done = subprocess.run(
        [*cmd, "--include", str(binary)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert f"{binary}: not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr

    missing = tmp_path / "nowhere.jsonl"
    done = subprocess.run(
        [*cmd, "--include", str(missing)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert f"{missing}: cannot read manifest" in done.stderr

    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "-o",
            str(out),
            "--wordnet-dir",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "data.noun: cannot read WordNet data" in done.stderr
