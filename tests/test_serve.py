"""asr serve over HTTP: the address and token rules, /health, POST /transcribe (the
JSON of `asr transcribe --format json`, byte for byte) and its limits, the page."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.cli import main
from asr.serve.app import STATIC, ServeOptions
from asr.serve.limits import UploadLimits
from tests.serving import multipart, serving


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny model: enough for everything but the words."""
    from asr.inference import save_model
    from asr.task import ASRTask

    torch.manual_seed(0)
    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    return save_model(task, tmp_path_factory.mktemp("tiny") / "model.ckpt")


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    options = ServeOptions(
        checkpoint=tiny_checkpoint,
        uploads=UploadLimits(max_upload_bytes=200_000, max_upload_seconds=5.0),
    )
    with serving(options) as running:
        yield running


@pytest.fixture(scope="module")
def secured(tiny_checkpoint):
    with serving(ServeOptions(checkpoint=tiny_checkpoint, token="s3cret")) as running:
        yield running


def wav_bytes(tmp_path: Path, seconds: float, name: str = "tone.wav") -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    path = tmp_path / name
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
    return path.read_bytes()


# -- the command's rules ----------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::"])
def test_another_address_needs_a_token_or_no_auth(host, tmp_path, capsys):
    ckpt = str(tmp_path / "m.ckpt")
    assert main(["serve", "--checkpoint", ckpt, "--host", host]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"asr serve: error: {host} is reachable from other machines")
    assert "--token" in err and "--no-auth" in err


def test_token_and_no_auth_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--checkpoint", "m.ckpt", "--token", "x", "--no-auth"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--max-streams", "0", "--max-streams must be at least 1, got 0"),
        ("--idle-timeout", "-1", "--idle-timeout must be a positive number, got -1"),
        ("--max-upload-bytes", "0", "--max-upload-bytes must be at least 1, got 0"),
        ("--port", "70000", "--port must be 0-65535, got 70000"),
    ],
)
def test_a_bad_limit_is_one_line(option, value, said, capsys):
    assert main(["serve", "--checkpoint", "m.ckpt", option, value]) == 1
    assert capsys.readouterr().err == f"asr serve: error: {said}\n"


def test_a_port_in_use_is_one_line(tiny_checkpoint, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port)]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        f"asr serve: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    assert main(["serve", "--checkpoint", str(missing), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err


# -- /health and the page ----------------------------------------------------------


def test_health_names_the_model_and_its_rate(server, tiny_checkpoint):
    status, health = server.json("/health")
    assert status == 200
    assert health["status"] == "ok"
    assert health["model"]["checkpoint"] == str(tiny_checkpoint)
    assert health["sample_rate"] == 16000
    assert health["streams"] == 0


def test_the_page_and_its_files_come_from_the_package(server):
    status, headers, body = server.request("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page
    app_js = (STATIC / "app.js").read_text()
    assert "/static/pcm-worklet.js" in app_js
    for name in ("app.js", "style.css", "pcm-worklet.js"):
        status, headers, body = server.request(f"/static/{name}")
        assert status == 200 and body == (STATIC / name).read_bytes()
    assert server.request("/static/nothing.js")[0] == 404


# -- the token and the origin --------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/health", "/static/app.js"])
def test_without_the_token_nothing_is_served(secured, path):
    status, headers, body = secured.request(path)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert json.loads(body) == {"error": "missing or wrong token"}
    wrong = {"Authorization": "Bearer s3creT"}
    assert secured.request(path, headers=wrong)[0] == 401
    assert secured.request(path + "?token=s3cre")[0] == 401


def test_the_token_passes_as_a_header_a_parameter_or_the_page_cookie(secured):
    assert secured.json("/health", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert secured.json("/health?token=s3cret")[0] == 200
    status, headers, _ = secured.request("/?token=s3cret")
    assert status == 200
    cookie = headers["set-cookie"]
    assert "asr_token=s3cret" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    status, _, _ = secured.request("/static/app.js", headers={"Cookie": cookie})
    assert status == 200


def test_the_token_is_checked_on_the_websocket(secured):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(secured.ws_url) as ws:
        message = json.loads(ws.recv(timeout=10))
        assert message == {
            "type": "error",
            "code": 1008,
            "message": "missing or wrong token",
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1008


def test_a_page_of_another_site_is_refused(server):
    status, body = server.json("/health", headers={"Origin": "http://evil.example"})
    assert status == 403 and "another site" in body["error"]
    same = {"Origin": server.url}
    assert server.json("/health", headers=same)[0] == 200


# -- POST /transcribe -------------------------------------------------------------


def test_an_upload_over_the_byte_limit_is_refused(server, tmp_path):
    data = wav_bytes(tmp_path, 7.0)  # 224 kB > 200 kB
    status, body = server.json("/transcribe", data=data)
    assert status == 413 and "the limit is 200000 bytes" in body["error"]


def test_a_chunked_upload_over_the_byte_limit_is_refused(server):
    # No Content-Length: the server counts as it reads.
    def body():
        for _ in range(30):
            yield b"\0" * 10_000

    status, _, raw = server.request(
        "/transcribe", data=body(), headers={"Transfer-Encoding": "chunked"}
    )
    assert status == 413 and "the limit is 200000 bytes" in json.loads(raw)["error"]


def test_an_upload_over_the_duration_limit_is_refused(server, tmp_path):
    t = np.zeros(8000 * 6)  # 6 s at 8 kHz: 96 kB, under the byte limit
    sf.write(tmp_path / "long.wav", t, 8000, subtype="PCM_16")
    data = (tmp_path / "long.wav").read_bytes()
    status, body = server.json("/transcribe", data=data)
    assert status == 413
    assert body == {
        "error": "upload: 6.0 s of audio; the limit is 5 s (--max-upload-seconds)"
    }


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "an empty upload: send the audio file as the body"),
        (b"this is not audio at all", "upload: "),
    ],
)
def test_a_bad_upload_is_one_line(server, data, said):
    status, body = server.json("/transcribe", data=data)
    assert status == 400 and body["error"].startswith(said)
    assert "\n" not in body["error"]


def test_a_multipart_upload_without_a_file_is_refused(server):
    boundary = "b0undary"
    data = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'
    data += f"--{boundary}--\r\n"
    status, body = server.json(
        "/transcribe",
        data=data.encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 400 and body == {"error": "the multipart upload holds no file"}


def test_transcribe_answers_the_json_of_asr_transcribe(
    fitted_checkpoint, espeak_corpus, tmp_path, capsys
):
    wav = sorted((espeak_corpus / "dev").rglob("*.flac"))[0]
    assert main(["transcribe", str(wav), "--checkpoint", str(fitted_checkpoint),
                 "--format", "json"]) == 0  # fmt: skip
    expected = capsys.readouterr().out
    assert json.loads(expected)["results"][0]["text"]  # real words, not nothing
    with serving(ServeOptions(checkpoint=fitted_checkpoint)) as running:
        body, content_type = multipart("file", str(wav), wav.read_bytes())
        status, _, got = running.request(
            "/transcribe", data=body, headers={"Content-Type": content_type}
        )
        assert status == 200
        assert got.decode() == expected
        status, _, raw = running.request("/transcribe", data=wav.read_bytes())
    assert status == 200
    document = json.loads(expected)
    document["results"][0]["path"] = "upload"
    assert json.loads(raw) == document
