"""The documentation's links point somewhere: every ``(#anchor)`` to a heading or an
``<a id>`` of the same file, every relative file link to a file of the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "recipes" / "librispeech" / "README.md"]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped
    (hyphens and underscores kept), spaces to hyphens; inline code marks removed."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file: its headings (outside code blocks; a repeated
    heading gets -1, -2, ... as on GitHub) and its explicit ``<a id>`` tags."""
    found = set(re.findall(r'<a id="([^"]+)"', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.*)$", prose(text), flags=re.M):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        found.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return found


def links(text: str) -> list[str]:
    """The targets of the Markdown links ``[text](target)`` outside code blocks."""
    return re.findall(r"\]\(([^)\s]+)\)", prose(text))


def broken_links(text: str, base: Path) -> list[str]:
    """The link targets of ``text`` (a Markdown file in ``base``) that resolve to
    nothing: an ``#anchor`` of no heading or ``<a id>``, a relative path to no file.
    Addresses with a scheme (http:, https:, mailto:) are not checked."""
    have = anchors(text)
    broken = []
    for target in links(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if path:
            if not (base / path).exists():
                broken.append(target)
        elif anchor not in have:
            broken.append(target)
    return broken


def test_github_anchor_follows_githubs_rule():
    cases = {
        "The largest configuration: an hour and a half of the two cores": (
            "the-largest-configuration-an-hour-and-a-half-of-the-two-cores"
        ),
        "`make demo`: what it does and what it reaches": (
            "make-demo-what-it-does-and-what-it-reaches"
        ),
        "Training speed on the CPU: `asr.gru` (`tools/bench_rnn.py`)": (
            "training-speed-on-the-cpu-asrgru-toolsbench_rnnpy"
        ),
    }
    for heading, anchor in cases.items():
        assert github_anchor(heading) == anchor


def test_anchor_check_finds_a_broken_link():
    text = "# Title\n\n## A section\n\nsee [here](#a-section) and [there](#nowhere)\n"
    assert [t[1:] for t in broken_links(text, ROOT)] == ["nowhere"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc: Path):
    text = doc.read_text(encoding="utf-8")
    targets = links(text)
    if doc.name == "README.md" and doc.parent == ROOT:
        assert len(targets) > 10, "README.md: few links found; is the pattern wrong?"
    broken = broken_links(text, doc.parent)
    assert not broken, f"{doc.relative_to(ROOT)}: links to nothing: {broken}"
