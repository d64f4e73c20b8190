"""Language-model text for the synthetic corpus: every WordNet usage example that
is not held out, not only the sentences that were spoken for training
(``asr data synthetic-lm-text``, the recipe's stage 2).

The corpus speaks a fraction of WordNet's ~46,000 usable examples (the 12 h demo
corpus: 15,000 for training, 4,000 for dev and test); the rest is text in the same
register that costs nothing to use. Written one per line:

- every transcript of the ``include`` manifests (the training text), then
- the examples of every synset none of whose examples is in an ``exclude``
  manifest. A held-out sentence's whole synset is left out, not only the sentence:
  its sibling examples show the same rare word ("pentamerous flowers") and would
  tell the LM what the test says.

Each line once. Examples are cleaned as the generator cleans what it speaks
(:func:`asr.synthetic.wordnet.clean_sentence`) and then normalized as manifests are
(:func:`asr.text.normalize`: lower case, "BOYS'" -> "boys'"), so the LM's words are
the transcripts' words and a held-out sentence is recognised in either form.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asr.synthetic.errors import CorpusError
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR, synset_examples
from asr.text import normalize

__all__ = ["LmTextSummary", "manifest_texts", "write_lm_text"]


@dataclass(frozen=True)
class LmTextSummary:
    """What :func:`write_lm_text` wrote, in lines."""

    out: Path
    included: int  # lines from the include manifests
    added: int  # further WordNet examples
    held_out_synsets: int  # synsets left out for holding a held-out sentence
    held_out_sentences: int  # distinct texts in the exclude manifests

    def format(self) -> str:
        """One line for the user."""
        return (
            f"{self.out}: {self.included + self.added} lines ({self.included} from "
            f"the included manifests, {self.added} more WordNet examples); "
            f"{self.held_out_synsets} synsets left out for the "
            f"{self.held_out_sentences} held-out sentences"
        )


def manifest_texts(paths: Iterable[Path]) -> list[str]:
    """The normalized ``text`` of every line of the manifests, in order.

    Raises:
        CorpusError: naming the file (and line) of anything unreadable.
    """
    texts = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CorpusError(f"{path}: cannot read manifest ({e.strerror})") from e
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"{path}: not UTF-8 text (byte {e.start}): not a manifest"
            ) from e
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as e:
                raise CorpusError(
                    f"{path}:{n}: not a manifest line with a text ({e})"
                ) from e
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{n}: text is not a string")
            texts.append(normalize(text))
    return texts


def write_lm_text(
    out: Path,
    include: Iterable[Path] = (),
    exclude: Iterable[Path] = (),
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    min_words: int = 1,
    max_words: int = 1000,
) -> LmTextSummary:
    """Write the LM text (see the module docstring) to ``out``; atomically, so an
    interrupted run leaves no half file. ``min_words``/``max_words`` bound the
    WordNet examples taken, in words (by default: all that clean).

    Raises:
        CorpusError: an unreadable manifest or WordNet file, or ``out`` unwritable.
    """
    held_out = set(manifest_texts(exclude))
    lines: dict[str, None] = dict.fromkeys(t for t in manifest_texts(include) if t)
    included = len(lines)
    held_out_synsets = 0
    for examples in synset_examples(Path(wordnet_dir), min_words, max_words):
        texts = [normalize(e.transcript) for e in examples]
        if any(t in held_out for t in texts):
            held_out_synsets += 1
            continue
        lines.update(dict.fromkeys(texts))
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise CorpusError(f"{out}: cannot write the LM text ({e.strerror})") from e
    return LmTextSummary(
        out=out,
        included=included,
        added=len(lines) - included,
        held_out_synsets=held_out_synsets,
        held_out_sentences=len(held_out),
    )
