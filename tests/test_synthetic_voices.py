"""The engines and voices of the synthetic corpus (asr.synthetic.voices): a missing
engine is named, with the package that provides it, before anything is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asr.cli import main
from asr.synthetic.corpus import generate_corpus
from asr.synthetic.errors import EngineMissingError
from asr.synthetic.voices import ENGINES


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH with symlinks to the engines except ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for engine in ENGINES:
        found = shutil.which(engine)
        if engine != missing and found:
            (bin_dir / engine).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("missing", ENGINES)
def test_missing_engine_is_named(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, missing))
    with pytest.raises(EngineMissingError, match=rf"'{missing}' not found"):
        generate_corpus(tmp_path / "out", hours=0.01, progress=lambda msg: None)
    assert not (tmp_path / "out").exists()


def test_cli_missing_engine_exits_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, "espeak-ng"))
    status = main(["data", "synthetic", str(tmp_path / "out"), "--minutes", "0.1"])
    assert status == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asr data synthetic: error: ")
    assert "espeak-ng" in lines[0] and "apt-get" in lines[0]
    assert "--allow-missing-engines" in lines[0]
