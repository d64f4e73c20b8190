"""The LibriSpeech recipe without the internet: a fake OpenSLR (a few espeak
utterances in the official layout, packed as ``<part>.tar.gz`` with an md5sum.txt,
plus resource 11's LM files) served from 127.0.0.1 by ``http.server`` in a thread.

Download: verified, resumed after a dropped connection or from an earlier partial
file (a ``Range`` request), bad checksums and corrupt archives rejected naming the
file, a second run makes no request. Extraction refuses members that escape. The
recipe runs end to end at toy size through ``run.sh --mirror``. DDP: two CPU
processes (gloo) train in a subprocess and end with identical weights.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest

from asr import librispeech as ls
from asr.cli import main
from asr.librispeech import (
    ArchiveError,
    Checksums,
    DownloadError,
    LibriSpeechError,
    extract,
    fetch,
    resolve_parts,
)

ROOT = Path(__file__).resolve().parent.parent
# toy.yaml is a delta over demo.yaml (its first line): both, the base first.
TOY = ROOT / "conf" / "synthetic" / "toy.yaml"
TOY_CONFIG = ["--config", str(TOY.parent / "demo.yaml"), "--config", str(TOY)]
FAKE_PARTS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
LM_SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the dog",
    "she sells sea shells by the sea shore",
    "good morning to you and good night",
    "the rain falls on the plain in spain",
    "we went home late that night",
    "the dog sat on the mat with the cat",
    "good night to you",
]


def librispeech_cli(args: list[str]) -> int:
    """``asr data librispeech ARGS`` in this process; its exit status."""
    return main(["data", "librispeech", *args])


# --------------------------------------------------------------- the fake OpenSLR


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_md5sum(directory: Path) -> None:
    files = sorted(p for p in directory.iterdir() if p.name != "md5sum.txt")
    lines = [f"{_md5(p)}  {p.name}\n" for p in files]
    (directory / "md5sum.txt").write_text("".join(lines))


def _pack(tree: Path, part: str, out: Path) -> None:
    """``tree`` (SPK/CHAPTER/...) as ``LibriSpeech/<part>/...`` in ``out``."""
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo("LibriSpeech/SPEAKERS.TXT")
        notes = b"; fake SPEAKERS.TXT\n"
        info.size = len(notes)
        tar.addfile(info, io.BytesIO(notes))
        tar.add(tree, arcname=f"LibriSpeech/{part}")


@pytest.fixture(scope="session")
def fake_openslr(espeak_corpus, tmp_path_factory) -> Path:
    """``12/<part>.tar.gz`` + ``12/md5sum.txt``; ``11/`` with the LM text, vocabulary,
    an upper-case ARPA 3-gram and an md5sum.txt. train-clean-100 holds the espeak
    training voices, each dev/test part the held-out voice."""
    from asr.lm import find_program

    root = tmp_path_factory.mktemp("openslr")
    corpus = root / "12"
    corpus.mkdir()
    for part in FAKE_PARTS:
        src = espeak_corpus / ("train" if part.startswith("train") else "dev")
        _pack(src, part, corpus / f"{part}.tar.gz")
    _write_md5sum(corpus)

    lm = root / "11"
    lm.mkdir()
    text = "".join(s.upper() + "\n" for s in LM_SENTENCES * 3)
    with gzip.open(lm / ls.LM_TEXT, "wt") as f:
        f.write(text)
    words = sorted({w for s in LM_SENTENCES for w in s.upper().split()})
    (lm / ls.LM_VOCAB).write_text("".join(w + "\n" for w in words))
    arpa = root / "3gram.arpa"
    subprocess.run(
        [find_program("lmplz"), "-o", "3", "--discount_fallback", "--arpa", str(arpa)],
        input=text,
        text=True,
        check=True,
        capture_output=True,
    )
    with (
        open(arpa, "rb") as src,
        gzip.open(lm / ls.LM_ARPA["3-gram.pruned.1e-7"], "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    arpa.unlink()
    _write_md5sum(lm)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` (206 / 416), a request log, and faults:
    ``server.drop[path] = n`` sends the full headers, then ``n`` bytes, then closes
    the connection (once)."""

    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d+)-", wanted)
            assert m, wanted
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        drop = self.server.drop.pop(self.path, None)
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    requests: list[tuple[str, str | None]]
    drop: dict[str, int]


@pytest.fixture
def mirror(fake_openslr, tmp_path):
    """A copy of the fake OpenSLR (tests may spoil it) served on a random port:
    ``(base URL, its directory, the server)``."""
    root = tmp_path / "mirror"
    shutil.copytree(fake_openslr, root)
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.requests, server.drop = [], {}
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, server
    finally:
        server.shutdown()
        server.server_close()


def checksums(base: str, downloads: Path, resource: int = 12) -> Checksums:
    return Checksums(base, resource, downloads, timeout=10)


def get(name: str, downloads: Path, base: str, **kw) -> Path:
    kw = {"retries": 2, "timeout": 10, "backoff": 0, **kw}
    return fetch(name, downloads, checksums(base, downloads), **kw)


# ------------------------------------------------------------------------ download


def test_parts_by_hours_and_by_name():
    assert resolve_parts(["100"]) == ["train-clean-100", *ls.EVAL_PARTS]
    assert resolve_parts(["960"]) == list(ls.PARTS)
    assert resolve_parts(["460"], with_eval=False) == list(ls.TRAIN_PARTS[:2])
    assert resolve_parts(["dev-clean test-other", "dev-clean"]) == [
        "dev-clean",
        "test-other",
    ]
    with pytest.raises(LibriSpeechError, match="unknown LibriSpeech part 'dev'"):
        resolve_parts(["dev"])


def test_download_verifies_then_a_second_run_makes_no_request(mirror, tmp_path):
    base, root, server = mirror
    downloads = tmp_path / "downloads"
    args = ["download", "--parts", "dev-clean", "test-clean", "--dest", str(downloads)]
    args += ["--mirror", base, "--backoff", "0"]
    assert librispeech_cli(args) == 0
    for part in ("dev-clean", "test-clean"):
        got = downloads / f"{part}.tar.gz"
        assert got.read_bytes() == (root / "12" / got.name).read_bytes()
        assert not got.with_name(got.name + ".part").exists()
    paths = [p for p, _ in server.requests]
    assert paths == ["/12/md5sum.txt", "/12/dev-clean.tar.gz", "/12/test-clean.tar.gz"]
    server.requests.clear()
    assert librispeech_cli(args) == 0
    assert server.requests == []  # verified stamps: not even the checksum list


def test_download_resumes_after_the_connection_drops(mirror, tmp_path):
    base, root, server = mirror
    size = (root / "12" / "dev-clean.tar.gz").stat().st_size
    server.drop["/12/dev-clean.tar.gz"] = size // 2
    path = get("dev-clean.tar.gz", tmp_path, base)
    assert _md5(path) == _md5(root / "12" / "dev-clean.tar.gz")
    assert server.requests[-2:] == [
        ("/12/dev-clean.tar.gz", None),
        ("/12/dev-clean.tar.gz", f"bytes={size // 2}-"),
    ]


def test_download_resumes_a_partial_file_left_by_an_earlier_run(mirror, tmp_path):
    base, root, server = mirror
    data = (root / "12" / "test-other.tar.gz").read_bytes()
    (tmp_path / "test-other.tar.gz.part").write_bytes(data[:1000])
    path = get("test-other.tar.gz", tmp_path, base)
    assert path.read_bytes() == data
    assert ("/12/test-other.tar.gz", "bytes=1000-") in server.requests
    assert ("/12/test-other.tar.gz", None) not in server.requests
    # a part file that is already whole: HTTP 416, verified, renamed
    (tmp_path / "dev-other.tar.gz.part").write_bytes(
        (root / "12" / "dev-other.tar.gz").read_bytes()
    )
    assert _md5(get("dev-other.tar.gz", tmp_path, base)) == _md5(
        root / "12" / "dev-other.tar.gz"
    )


def test_an_interrupted_download_names_the_file_and_resumes_next_run(mirror, tmp_path):
    base, root, server = mirror
    server.drop["/12/dev-clean.tar.gz"] = 5000
    with pytest.raises(DownloadError, match=r"dev-clean\.tar\.gz.*run again to resume"):
        get("dev-clean.tar.gz", tmp_path, base, retries=0)
    part = tmp_path / "dev-clean.tar.gz.part"
    assert part.stat().st_size == 5000
    assert not (tmp_path / "dev-clean.tar.gz").exists()
    get("dev-clean.tar.gz", tmp_path, base)
    assert server.requests[-1] == ("/12/dev-clean.tar.gz", "bytes=5000-")
    assert not part.exists()


def test_a_bad_md5_is_rejected_naming_the_file(mirror, tmp_path):
    base, root, server = mirror
    listing = root / "12" / "md5sum.txt"
    listing.write_text(
        re.sub(r"^\w+(  dev-other)", "0" * 32 + r"\1", listing.read_text(), flags=re.M)
    )
    downloads = tmp_path / "downloads"
    with pytest.raises(DownloadError) as err:
        get("dev-other.tar.gz", downloads, base)
    message = str(err.value)
    assert "dev-other.tar.gz: md5 mismatch" in message and "0" * 32 in message
    assert not (downloads / "dev-other.tar.gz").exists()
    assert not (downloads / "dev-other.tar.gz.part").exists()  # deleted: start afresh


def test_without_a_checksum_list_the_published_md5s_apply(mirror, tmp_path):
    base, root, server = mirror
    (root / "12" / "md5sum.txt").unlink()
    with pytest.raises(DownloadError, match="dev-clean.tar.gz: md5 mismatch") as err:
        get("dev-clean.tar.gz", tmp_path, base)  # the fake is not the real archive
    assert ls.PUBLISHED_MD5["dev-clean.tar.gz"] in str(err.value)


def test_without_a_checksum_list_the_published_lm_md5s_apply(mirror, tmp_path):
    """The language models, their vocabulary and text are checked as the audio
    archives are: against OpenSLR's published MD5s when the host lists none."""
    base, root, _ = mirror
    (root / "11" / "md5sum.txt").unlink()
    name = ls.LM_ARPA["3-gram.pruned.1e-7"]
    sums = checksums(base, tmp_path, resource=11)
    with pytest.raises(DownloadError, match=f"{name}: md5 mismatch") as err:
        fetch(name, tmp_path, sums, retries=2, timeout=10, backoff=0)
    assert ls.PUBLISHED_LM_MD5[name] in str(err.value)  # the fake is not the real LM
    assert not (tmp_path / name).exists()
    assert set(ls.PUBLISHED_LM_MD5) == {*ls.LM_ARPA.values(), ls.LM_VOCAB, ls.LM_TEXT}
    assert all(re.fullmatch("[0-9a-f]{32}", v) for v in ls.PUBLISHED_LM_MD5.values())


def test_a_download_that_would_fill_the_disk_is_refused_first(
    mirror, tmp_path, monkeypatch
):
    from collections import namedtuple

    import asr.librispeech.download as download

    base, _, server = mirror
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage(1, 1, 1000))
    with pytest.raises(download.DiskSpaceError) as err:
        get("dev-clean.tar.gz", tmp_path, base)
    message = str(err.value)
    assert "downloading dev-clean.tar.gz needs" in message and "free" in message
    assert not list(tmp_path.glob("dev-clean.tar.gz*"))  # nothing written


def test_an_extraction_that_would_fill_the_disk_is_refused_first(
    mirror, tmp_path, monkeypatch
):
    from collections import namedtuple

    import asr.librispeech.download as download

    base, _, _ = mirror
    archive = get("dev-clean.tar.gz", tmp_path / "dl", base)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage(1, 1, 1000))
    with pytest.raises(download.DiskSpaceError, match="extracting dev-clean.tar.gz"):
        extract(archive, tmp_path / "corpus", "dev-clean")
    assert not (tmp_path / "corpus" / "LibriSpeech").exists()


def test_the_official_list_must_agree_with_the_published_values(tmp_path):
    sums = checksums(ls.OPENSLR, tmp_path)
    # a cached copy of www.openslr.org's list: no request is made
    sums._cache().write_text(f"{'1' * 32}  test-clean.tar.gz\n")
    with pytest.raises(DownloadError, match="refusing to guess"):
        sums.get("test-clean.tar.gz")
    assert set(ls.PUBLISHED_MD5) == {f"{p}.tar.gz" for p in ls.PARTS}
    assert all(re.fullmatch("[0-9a-f]{32}", v) for v in ls.PUBLISHED_MD5.values())


def test_a_present_file_with_the_wrong_md5_is_kept_and_named(mirror, tmp_path):
    base, _, server = mirror
    (tmp_path / "dev-clean.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(
        DownloadError, match=r"dev-clean\.tar\.gz: md5 mismatch.*delete"
    ):
        get("dev-clean.tar.gz", tmp_path, base)
    assert (tmp_path / "dev-clean.tar.gz").read_bytes() == b"not the archive"
    assert [p for p, _ in server.requests] == ["/12/md5sum.txt"]


def test_http_errors_name_the_file(mirror, tmp_path, capsys):
    base, root, _ = mirror
    (root / "12" / "test-other.tar.gz").unlink()
    args = ["download", "--parts", "test-other", "--dest", str(tmp_path)]
    assert librispeech_cli([*args, "--mirror", base, "--backoff", "0"]) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(errors) == 1
    assert errors[0].startswith("asr data librispeech download: error: ")
    assert "test-other.tar.gz: HTTP 404" in errors[0] and base in errors[0]


# ------------------------------------------------------------------------- extract


def test_extract_moves_the_part_into_place(fake_openslr, tmp_path):
    archive = fake_openslr / "12" / "dev-clean.tar.gz"
    target = extract(archive, tmp_path, "dev-clean")
    assert target == tmp_path / "LibriSpeech" / "dev-clean"
    assert len(list(target.rglob("*.flac"))) == 6
    assert (tmp_path / "LibriSpeech" / "SPEAKERS.TXT").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["LibriSpeech"]  # no leftovers
    assert extract(archive, tmp_path, "dev-clean") == target  # skipped


def test_a_corrupt_archive_is_rejected_naming_it(mirror, tmp_path, capsys):
    base, root, _ = mirror
    bad = root / "12" / "dev-other.tar.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated
    _write_md5sum(root / "12")  # listed as is: only extraction can tell
    downloads, dest = tmp_path / "downloads", tmp_path / "data"
    common = ["--parts", "dev-other"]
    args = ["download", *common, "--dest", str(downloads), "--mirror", base]
    assert librispeech_cli(args) == 0
    rc = librispeech_cli(
        ["extract", *common, "--downloads", str(downloads), "--dest", str(dest)]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{downloads / 'dev-other.tar.gz'}: corrupt archive" in err
    assert not (dest / "LibriSpeech" / "dev-other").exists()
    assert not any(p.name.endswith(".extracting") for p in dest.iterdir())
    garbage = tmp_path / "test-clean.tar.gz"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(ArchiveError, match="test-clean.tar.gz: corrupt archive"):
        extract(garbage, dest, "test-clean")


def _evil_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("LibriSpeech/dev-clean/1/2/1-2.trans.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("LibriSpeech/../../escaped.txt", tarfile.REGTYPE, "it leaves the target"),
        ("/tmp/absolute-escape.txt", tarfile.REGTYPE, "an absolute path"),
        ("LibriSpeech/dev-clean/link", tarfile.SYMTYPE, "a symbolic link"),
        ("LibriSpeech/dev-clean/hard", tarfile.LNKTYPE, "a hard link"),
        ("LibriSpeech/dev-clean/dev", tarfile.CHRTYPE, "a device or fifo"),
    ],
)
@pytest.mark.parametrize("tar_filters", [True, False])
def test_extract_refuses_members_that_could_escape(
    tmp_path, name, kind, problem, tar_filters, monkeypatch
):
    """With tarfile's "data" filter and without it (Python before 3.10.12 / 3.11.4
    has none): our own checks refuse the same members."""
    import asr.librispeech.download as download

    monkeypatch.setattr(download, "_TAR_FILTERS", tar_filters)
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = (
        "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    )
    archive = _evil_archive(tmp_path / "dev-clean.tar.gz", member)
    dest = tmp_path / "a" / "b"
    with pytest.raises(ArchiveError) as err:
        extract(archive, dest, "dev-clean")
    assert str(archive) in str(err.value) and problem in str(err.value)
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/absolute-escape.txt").exists()
    assert not (dest / "LibriSpeech").exists()


def test_extract_wants_the_part_it_was_asked_for(fake_openslr, tmp_path):
    with pytest.raises(ArchiveError, match="no LibriSpeech/dev-other/ inside"):
        extract(fake_openslr / "12" / "dev-clean.tar.gz", tmp_path, "dev-other")


# ----------------------------------------------------------------- manifests, LM


def test_manifests_per_part_and_for_training(fake_openslr, tmp_path):
    from asr.manifest import read_manifest

    copy = tmp_path / "copy"
    for part in ("train-clean-100", "dev-clean"):  # an existing copy, <root>/<part>
        extract(fake_openslr / "12" / f"{part}.tar.gz", tmp_path / "x", part)
    shutil.move(tmp_path / "x" / "LibriSpeech", copy)
    out = ls.write_manifests([copy], ["train-clean-100", "dev-clean"], tmp_path / "m")
    assert set(out) == {"train-clean-100", "dev-clean", "train-100"}
    train = read_manifest(out["train-100"])
    assert len(train) == 18 and all(Path(u.audio_filepath).is_file() for u in train)
    assert train[0].id == "100-1-0000" and train[0].text == "the cat sat on the mat"
    with pytest.raises(LibriSpeechError, match="'test-clean' not found"):
        ls.write_manifests([copy], ["test-clean"], tmp_path / "m")


def test_the_openslr_arpa_is_lower_cased_binarized_with_its_unigrams(
    fake_openslr, tmp_path
):
    from asr.lm import load_kenlm, load_lm

    arpa = fake_openslr / "11" / ls.LM_ARPA["3-gram.pruned.1e-7"]
    vocab = fake_openslr / "11" / ls.LM_VOCAB
    out = ls.prepare_arpa_lm(arpa, vocab, tmp_path / "lm.bin")
    files = load_lm(out)
    assert not files.is_arpa
    assert set(files.unigrams) == {w for s in LM_SENTENCES for w in s.split()}
    model = load_kenlm(out)
    assert model.score("the cat sat on the mat") > model.score("mat the on sat cat the")
    assert model.score("the cat sat") > model.score("THE CAT SAT")  # lower case now
    bad = tmp_path / "bad.arpa.gz"
    bad.write_bytes(arpa.read_bytes()[:50])
    with pytest.raises(ArchiveError, match="bad.arpa.gz: corrupt"):
        ls.prepare_arpa_lm(bad, vocab, tmp_path / "bad.bin")


def test_results_table(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for s, wer in (("dev-clean", 0.1), ("test-clean", 0.2)):
        for dec, k in (("greedy", 1.0), ("lm", 0.5)):
            r = {"utterances": 7, "wer": wer * k, "cer": wer * k / 3}
            r["wer_ci"] = [wer * k - 0.01, wer * k + 0.01]
            (results / f"{s}.{dec}.json").write_text(json.dumps(r))
    decoder = tmp_path / "decoder.json"
    settings = {"alpha": 0.5, "beta": 1.0, "beam_width": 64}
    settings["tuned"] = {"manifest": "d/dev-clean.jsonl"}
    decoder.write_text(json.dumps(settings))
    table = ls.results_table(results, decoder_json=decoder, notes=["a note"])
    assert "| dev-clean | 7 | 10.00 | 3.33 | 5.00 | 1.67 | 4.00 - 6.00 |" in table
    assert "| test-clean | 7 | 20.00 |" in table and "10.5 greedy" in table
    assert "| dev-other |  | n/a | n/a | n/a | n/a | n/a |" in table
    assert "alpha 0.5, beta 1.0" in table and "- a note" in table


# --------------------------------------------------------------------- the recipe


def run_recipe(*args: str, timeout: float = 900) -> str:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "recipes/librispeech/run.sh", *args]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


@pytest.mark.slow
def test_recipe_end_to_end_from_a_mirror(mirror, tmp_path):
    base, _, server = mirror
    data, exp = tmp_path / "data", tmp_path / "exp"
    args = [
        "--parts", "100", "--mirror", base, "--data", str(data), "--exp", str(exp),
        "--config", str(TOY), "--device", "cpu",
        "--tune-opts", "--alphas 0.5 1.0 --betas 0.0 1.0 --beam-width 8",
        "--eval-opts", "--bootstrap 50",
        "--", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    out = run_recipe(*args)
    # 0-1: every part downloaded, verified and extracted
    for part in FAKE_PARTS:
        assert (data / "downloads" / f"{part}.tar.gz").is_file()
        assert list((data / "LibriSpeech" / part).rglob("*.flac"))
    # 2: manifests
    assert len((data / "train-100.jsonl").read_text().splitlines()) == 18
    for part in ls.EVAL_PARTS:
        assert len((data / f"{part}.jsonl").read_text().splitlines()) == 6
    # 3: the OpenSLR 11 ARPA, lower-cased and binarized, with its unigrams
    lm = data / "lm" / "3-gram.pruned.1e-7.bin"
    assert lm.is_file() and "cat" in Path(f"{lm}.unigrams.txt").read_text().split()
    # 4-5: a model, and LM weights tuned on dev-clean beside it
    assert (exp / "model.ckpt").is_file()
    tuned = json.loads((exp / "decoder.json").read_text())
    assert tuned["alpha"] in (0.5, 1.0) and tuned["beta"] in (0.0, 1.0)
    assert tuned["tuned"]["manifest"].endswith("dev-clean.jsonl")
    # 6: greedy and LM results on the four sets
    for part in ls.EVAL_PARTS:
        greedy = json.loads((exp / "results" / f"{part}.greedy.json").read_text())
        with_lm = json.loads((exp / "results" / f"{part}.lm.json").read_text())
        assert greedy["utterances"] == with_lm["utterances"] == 6
        assert greedy["decoder"] != with_lm["decoder"]
        assert with_lm["decoder_settings"]["alpha"] == tuned["alpha"]
    # 7: the table
    table = (exp / "RESULTS.md").read_text()
    for part in ls.EVAL_PARTS:
        assert f"| {part} | 6 |" in table
    assert "stage 7" in out

    # a second run skips every stage and asks the mirror for nothing
    server.requests.clear()
    again = run_recipe(*args)
    assert again.count("skipping") == 7, again
    assert server.requests == []

    # the LM built with `asr lm build` from librispeech-lm-norm.txt.gz instead
    run_recipe(*args[:-5], "--lm", "build", "--lm-order", "3", "--stage", "3",
               "--stop-stage", "3")  # fmt: skip
    built = data / "lm" / "built-3gram.bin"
    assert built.is_file() and Path(f"{built}.unigrams.txt").is_file()
    assert [p for p, _ in server.requests] == [f"/11/{ls.LM_TEXT}"]  # list cached

    # an existing copy (--data-dir): no download, manifests point into it
    server.requests.clear()
    copy = tmp_path / "data2"
    out = run_recipe("--parts", "100", "--data-dir", str(data), "--data", str(copy),
                     "--mirror", base, "--stop-stage", "2")  # fmt: skip
    assert "using the copy" in out and server.requests == []
    first = json.loads((copy / "dev-clean.jsonl").read_text().splitlines()[0])
    assert Path(first["audio_filepath"]).resolve().is_relative_to(data.resolve())


# ------------------------------------------------------------------------------ DDP


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lightning", "torchrun"])
def test_ddp_two_cpu_ranks_end_with_identical_weights(
    espeak_manifests, tmp_path, launcher
):
    """Two gloo processes train the toy model in bf16-mixed with gradient
    accumulation. Both ranks must run the same number of steps on disjoint data,
    see finite losses, in SortaGrad order in epoch 0, and end with the same
    parameters and buffers -- the same as the checkpoint rank 0 wrote."""
    import torch
    from ddp_probe import state_digest

    from asr.task import ASRTask

    out = tmp_path / "run"
    probe = out / "probe"
    train_args = [
        "train", *TOY_CONFIG,
        "--data.train_manifest", str(espeak_manifests["train"]),
        "--data.val_manifest", str(espeak_manifests["dev"]),
        "--data.max_batch_seconds", "6",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "2",
        "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.precision", "bf16-mixed",
        "--trainer.accumulate_grad_batches", "2",
        "--trainer.callbacks+=ddp_probe.RankProbe",
        "--trainer.callbacks.out_dir", str(probe),
    ]  # fmt: skip
    if launcher == "torchrun":  # what a multi-node job runs on each node
        torchrun = Path(sys.executable).parent / "torchrun"
        cmd = [str(torchrun), "--standalone", "--nnodes", "1", "--nproc-per-node", "2"]
        cmd += ["-m", "asr", *train_args, "--trainer.num_nodes", "1"]
    else:  # Lightning starts rank 1 itself by re-running this command
        cmd = [sys.executable, "-m", "asr", *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, rec in enumerate(ranks):
        assert rec["rank"] == r and rec["world_size"] == 2
        assert rec["sampler"] == {"num_replicas": 2, "rank": r}
    # same steps, in every epoch, on both ranks (else the all-reduce would hang)
    assert ranks[0]["global_step"] == ranks[1]["global_step"] > 0
    for epoch in ("0", "1"):
        e0, e1 = (rec["epochs"][epoch] for rec in ranks)
        assert len(e0["batches"]) == len(e1["batches"]) >= 2
        # disjoint shares covering the training set (padding may repeat one batch)
        ids0 = {i for b in e0["batches"] for i in b}
        ids1 = {i for b in e1["batches"] for i in b}
        assert len(ids0 | ids1) == 18
        assert len(ids0 & ids1) <= max(len(b) for b in e0["batches"] + e1["batches"])
        for e in (e0, e1):
            assert all(isinstance(x, float) for x in e["losses"]), e["losses"]
    for rec in ranks:  # SortaGrad: epoch 0 from short to long on each rank
        seconds = rec["epochs"]["0"]["seconds"]
        assert seconds[:-1] == sorted(seconds[:-1]), seconds
    # training moved the weights, identically on both ranks
    assert ranks[0]["start"] == ranks[1]["start"]
    assert ranks[0]["end"]["parameters"] != ranks[0]["start"]["parameters"]
    assert ranks[0]["end"] == ranks[1]["end"]
    # and the checkpoint rank 0 wrote is what rank 1 ended with
    ckpt = torch.load(out / "logs" / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k[0] != "_"}
    task = ASRTask(**hparams)
    params = {n: ckpt["state_dict"][n] for n, _ in task.named_parameters()}
    assert state_digest(params) == ranks[1]["end"]["parameters"]
    assert (out / "logs" / "model.ckpt").is_file()


@pytest.mark.slow
def test_ddp_rank_whose_whole_batch_is_unreadable_does_not_hang_the_others(
    espeak_manifests, tmp_path
):
    """A file that cannot be read when its batch is loaded is logged and left out.
    When that empties one rank's batch, the other rank's backward pass still waits
    for this rank's gradients: the empty rank must take part (zero gradients), not
    skip the step, or the ranks' collectives go out of step (seen here with gloo:
    rank 1 dies with "Connection closed by peer"; elsewhere a hang). One unreadable
    file as long as a whole batch (not opened before training: data.check_audio
    false) gives exactly that."""
    import torch
    from ddp_probe import state_digest

    from asr.manifest import Utterance, read_manifest, write_manifest
    from asr.task import ASRTask

    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"this is not audio\n" * 512)
    manifest = tmp_path / "train.jsonl"
    write_manifest(
        manifest,
        [
            *read_manifest(espeak_manifests["train"]),
            Utterance(str(broken), 5.5, "a broken file", id="broken"),
        ],
    )

    out = tmp_path / "run"
    probe = out / "probe"
    cmd = [
        sys.executable, "-m", "asr", "train", *TOY_CONFIG,
        "--data.train_manifest", str(manifest),
        "--data.val_manifest", str(espeak_manifests["dev"]),
        "--data.check_audio", "false",
        "--data.max_batch_seconds", "6",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1",
        "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.callbacks+=ddp_probe.RankProbe",
        "--trainer.callbacks.out_dir", str(probe),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    run = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # rank 1 is in the same group
    )  # fmt: skip
    try:
        stdout, stderr = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        raise AssertionError("DDP training hung on one rank's empty batch") from None
    assert run.returncode == 0, stdout[-2000:] + stderr[-5000:]
    assert "skipping unreadable audio" in stderr and str(broken) in stderr

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    b0, b1 = (rec["epochs"]["0"]["batches"] for rec in ranks)
    assert len(b0) == len(b1) and ranks[0]["global_step"] == ranks[1]["global_step"]
    # the broken file's batch (the longest: last in SortaGrad order) was empty on
    # one rank, at a step where the other rank trained on real speech
    empty = [(r, i) for r, bs in enumerate((b0, b1)) for i, b in enumerate(bs) if not b]
    assert len(empty) == 1, empty
    r, i = empty[0]
    assert (b0, b1)[1 - r][i], "the other rank had a batch at that step"
    assert ranks[r]["epochs"]["0"]["losses"][i] == 0.0
    # every step was taken on both ranks alike: the same weights, and they moved
    assert ranks[0]["end"] == ranks[1]["end"]
    assert ranks[0]["end"]["parameters"] != ranks[0]["start"]["parameters"]
    ckpt = torch.load(out / "logs" / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k[0] != "_"}
    task = ASRTask(**hparams)
    params = {n: ckpt["state_dict"][n] for n, _ in task.named_parameters()}
    assert state_digest(params) == ranks[0]["end"]["parameters"]


def test_empty_batch_in_one_process_skips_the_step():
    """Alone, an empty batch returns no loss: Lightning skips backward and update
    (a zero loss would still let AdamW's momentum and weight decay move weights)."""
    from asr.data import collate
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny")
    empty = collate([None, None])  # both files of the batch were unreadable
    assert empty.ids == [] and task.training_step(empty, 0) is None


def test_sync_batchnorm_is_refused_with_a_clear_error():
    import torch

    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny")
    task.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task.model)
    with pytest.raises(ValueError, match="sync_batchnorm: false"):
        task.on_fit_start()
