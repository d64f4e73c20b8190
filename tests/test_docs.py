"""The documentation holds together: every ``(#anchor)`` points to a heading or an
``<a id>`` of its file, every relative link to a file of the repository (and to a
heading of it, with ``path#anchor``), and no link leaves the repository. README.md is
a user guide read in one screen: at most 200 lines, the two commands and a
transcription example at the top. docs/reliability.md names tests that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [
    README,
    *sorted(ROOT.glob("recipes/*/README.md")),
    *sorted(ROOT.glob("recipes/*/RESULTS.md")),
    *sorted(ROOT.glob("docs/*.md")),
]


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
    nothing: an ``#anchor`` of no heading or ``<a id>``, a relative path to no file,
    a ``path.md#anchor`` to no heading of that file. Addresses with a scheme (http:,
    https:, mailto:) are not checked."""
    have = anchors(text)
    broken = []
    for target in links(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if path:
            file = base / path
            if not file.exists():
                broken.append(target)
            elif anchor and file.suffix == ".md":
                if anchor not in anchors(file.read_text(encoding="utf-8")):
                    broken.append(target)
        elif anchor not in have:
            broken.append(target)
    return broken


def links_outside(text: str, base: Path, root: Path = ROOT) -> list[str]:
    """The relative link targets of ``text``, and the documents it quotes as code
    (`` `../x.md` ``), that leave ``root`` (``../`` past it) or point into
    ``shared/``, which is no part of the repository."""
    outside = []
    quoted = re.findall(r"`(\.\./[^`\s]+\.md)`", text)
    for target in [*links(text), *quoted]:
        path = target.partition("#")[0]
        if not path or re.match(r"[a-z]+:", target):
            continue
        resolved = (base / path).resolve()
        if not resolved.is_relative_to(root) or (
            resolved.relative_to(root).parts[:1] == ("shared",)
        ):
            outside.append(target)
    return outside


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
    text = "[a](docs/design.md#layers) [b](docs/design.md#no-such-heading)"
    assert broken_links(text, ROOT) == ["docs/design.md#no-such-heading"]


def test_outside_check_finds_links_that_leave_the_repository():
    text = "[a](../shared/DESIGN.md) [b](docs/design.md) [c](shared/x.md) [d](#x)"
    assert links_outside(text, ROOT) == ["../shared/DESIGN.md", "shared/x.md"]
    assert links_outside("as in `../shared/DESIGN.md`", ROOT) == ["../shared/DESIGN.md"]
    assert links_outside("[e](../../README.md)", ROOT / "recipes" / "synthetic") == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc: Path):
    text = doc.read_text(encoding="utf-8")
    targets = links(text)
    if doc.name == "README.md" and doc.parent == ROOT:
        assert len(targets) > 10, "README.md: few links found; is the pattern wrong?"
    broken = broken_links(text, doc.parent)
    assert not broken, f"{doc.relative_to(ROOT)}: links to nothing: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository(doc: Path):
    outside = links_outside(doc.read_text(encoding="utf-8"), doc.parent)
    name = doc.relative_to(ROOT)
    assert not outside, f"{name}: links outside the repository: {outside}"


def test_the_docs_are_all_there():
    names = {str(p.relative_to(ROOT)) for p in DOCS}
    for name in [
        "recipes/synthetic/README.md",
        "recipes/synthetic/RESULTS.md",
        "recipes/librispeech/README.md",
        "recipes/librispeech/RESULTS.md",
        "docs/design.md",
        "docs/benchmarks.md",
        "docs/reliability.md",
    ]:
        assert name in names, f"{name} is missing"
    assert (ROOT / "recipes" / "synthetic" / "scaling.png").stat().st_size > 10_000


def test_readme_is_a_user_guide_read_in_one_screen():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200)"
    first = {
        what: next((i for i, line in enumerate(lines, 1) if what in line), None)
        for what in ("make demo", "make test", "asr transcribe ")
    }
    for what, line in first.items():
        assert line is not None and line <= 60, f"README.md: '{what}' at line {line}"
    dated = [line for line in lines if re.search(r"\b20\d\d-[01]\d-[0-3]\d\b", line)]
    assert not dated, f"README.md holds dates (history belongs in git log): {dated}"


def test_reliability_names_tests_that_exist():
    """Each ``test_FILE.py::name`` (or ``::name``, of the file named before it on
    the line) in docs/reliability.md is a test function of that file."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named, missing = 0, []
    for line in text.splitlines():
        current = None
        for token in re.findall(r"`([^`]*)`", line):
            found = re.fullmatch(r"(test_\w+\.py)?::(\w+)", token)
            if not found:
                continue
            current = found.group(1) or current
            assert current, f"docs/reliability.md: '{token}' names no file: {line}"
            source = (ROOT / "tests" / current).read_text(encoding="utf-8")
            named += 1
            if not re.search(rf"^(async )?def {found.group(2)}\(", source, re.M):
                missing.append(f"{current}::{found.group(2)}")
    assert named > 20, "docs/reliability.md: few tests found; is the pattern wrong?"
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
