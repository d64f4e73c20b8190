"""asr serve's WS /stream: the protocol, batch dispatch, every limit and bad client
(each gets one JSON error and a close code, and the other streams are served on),
1,000 streams opened and dropped at a flat RSS, SIGTERM giving every open stream
its finals, the documented Python client, and the final text of a stream equal to
`asr transcribe` of the same audio."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asr.audio import load_audio
from asr.cli import main
from asr.serve.app import ServeOptions
from asr.serve.limits import StreamLimits
from tests.serving import REPO, rss_bytes, serve_process, serving

RATE = 16000
START = {"sample_rate": RATE, "format": "s16le"}
END = json.dumps({"type": "end"})


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> Path:
    """An untrained tiny streaming model: unidirectional, no feature
    normalisation. Its words are noise; the protocol does not care."""
    from asr.inference import save_model
    from asr.task import ASRTask

    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={"bidirectional": False, "lookahead": 2},
        frontend={"kind": "logmel", "n_mels": 20, "normalize": "none"},
    )
    return save_model(task, tmp_path_factory.mktemp("tiny_stream") / "model.ckpt")


LIMITS = StreamLimits(
    max_streams=3,
    max_message_bytes=8000,
    idle_timeout=3.0,
    max_messages_per_second=100.0,
)


@pytest.fixture(scope="module")
def server(tiny_stream):
    with serving(ServeOptions(checkpoint=tiny_stream, streams=LIMITS)) as running:
        yield running


def noise(seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pcm = rng.normal(0, 0.1, int(RATE * seconds)).clip(-1, 1)
    return (pcm * 32767).astype("<i2").tobytes()


def frames(pcm: bytes, seconds: float = 0.1) -> list[bytes]:
    step = 2 * int(RATE * seconds)
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def dial(url: str):
    """A connected client (as ``with connect(url) as ws`` gives it: the tests
    close their sockets through the protocol, or on purpose without it)."""
    return connect(url).__enter__()


def start(url: str):
    ws = dial(url)
    ws.send(json.dumps(START))
    ready = json.loads(ws.recv(timeout=30))
    assert ready["type"] == "ready" and ready["sample_rate"] == RATE, ready
    assert ready["latency"] > 0
    return ws


def until_closed(ws, timeout: float = 120) -> tuple[list[dict], int | None]:
    """Every message until the server closes; and the close code."""
    events = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            events.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
    except ConnectionClosed:
        pass
    return events, ws.close_code


def finish(ws, pcm: bytes) -> tuple[list[dict], int | None]:
    for f in frames(pcm):
        ws.send(f)
    ws.send(END)
    return until_closed(ws)


def health(running) -> dict:
    return running.json("/health")[1]


def wait_streams(running, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while health(running)["streams"] != n:
        assert time.monotonic() < deadline, health(running)
        time.sleep(0.05)


# -- the protocol ------------------------------------------------------------------


def test_a_stream_gets_partials_and_a_normal_close(server):
    ws = start(server.ws_url)
    events, code = finish(ws, noise(1.5))
    assert code == 1000
    partials = [e for e in events if e["type"] == "partial"]
    assert partials, events
    assert {e["type"] for e in events} <= {"partial", "final"}
    ends = [e["end"] for e in partials]
    assert ends == sorted(ends) and ends[-1] <= 1.5
    wait_streams(server, 0)


def test_streams_go_through_the_model_together(server):
    """Four streams sending at once: the dispatcher's batches hold several."""
    before = health(server)["dispatch"]
    sockets = [start(server.ws_url) for _ in range(3)]
    pcm = noise(2.0)
    threads = [threading.Thread(target=finish, args=(ws, pcm)) for ws in sockets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = health(server)["dispatch"]
    batches = after["batches"] - before["batches"]
    streams = after["stream_steps"] - before["stream_steps"]
    assert batches > 0 and streams / batches > 1.0, (before, after)
    assert after["batch"] is True and after["latency_ms"]["count"] > 0


def test_a_model_that_cannot_stream_serves_files_only(tmp_path):
    from asr.inference import save_model
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    ckpt = save_model(task, tmp_path / "bidi.ckpt")
    with serving(ServeOptions(checkpoint=ckpt)) as running:
        h = health(running)
        assert h["streaming"] is False and "bidirectional" in h["streaming_error"]
        with connect(running.ws_url) as ws:
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["code"] == 1003
            assert "cannot stream" in error["message"]
            events, code = until_closed(ws)
        assert code == 1003


# -- limits and bad clients ------------------------------------------------------


def refused(ws, code: int, said: str) -> None:
    """The next message is the error, then the close, with ``code``."""
    events, closed = until_closed(ws, timeout=30)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1, events
    assert errors[0]["code"] == code and said in errors[0]["message"], errors
    assert closed == code


def test_one_stream_over_the_limit_is_refused_and_the_open_ones_go_on(server):
    wait_streams(server, 0)
    open_ones = [start(server.ws_url) for _ in range(LIMITS.max_streams)]
    extra = dial(server.ws_url)
    refused(extra, 1013, "too many open streams (the limit is 3, --max-streams)")
    pcm = noise(1.0)
    for ws in open_ones:
        events, code = finish(ws, pcm)
        assert code == 1000 and any(e["type"] == "partial" for e in events)
    wait_streams(server, 0)
    ws = start(server.ws_url)  # room again
    assert finish(ws, pcm)[1] == 1000


def _flood(ws):
    try:
        for _ in range(400):
            ws.send(b"\0\0")
    except ConnectionClosed:  # refused before the last
        pass


def vanish(ws) -> None:
    """End the TCP connection under the client: no close frame."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()


BAD_CLIENTS = {
    "no start message": (False, lambda ws: ws.send(b"\0\0" * 160), 1008,
                         "expected a start message first"),
    "bad JSON": (False, lambda ws: ws.send("{sample_rate: 16000"), 1007,
                 "the start message is not JSON"),
    "unknown format": (False,
                       lambda ws: ws.send(json.dumps({**START, "format": "f32le"})),
                       1003, "unknown format 'f32le'; this server takes s16le"),
    "another rate": (False,
                     lambda ws: ws.send(json.dumps({**START, "sample_rate": 8000})),
                     1003, "sample_rate 8000 is not the model's"),
    "odd byte count": (True, lambda ws: ws.send(b"\0" * 321), 1007,
                       "a frame of 321 bytes: s16le PCM has 2 bytes a sample"),
    "message too big": (True, lambda ws: ws.send(b"\0" * 8002), 1009,
                        "a message of 8002 bytes; the limit is 8000"),
    "bad JSON later": (True, lambda ws: ws.send("end"), 1007,
                       "a message that is not JSON"),
    "unknown message": (True, lambda ws: ws.send(json.dumps({"type": "pause"})),
                        1008, "unknown message 'pause'"),
    "flood of tiny frames": (True, _flood, 1008,
                             "more than 100 messages a second; send larger frames"),
    "idle": (True, lambda ws: None, 1008, "no message for 3 s (--idle-timeout)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CLIENTS))
def test_a_bad_client_gets_an_error_and_a_close_and_others_go_on(server, case):
    started, act, code, said = BAD_CLIENTS[case]
    wait_streams(server, 0)
    bystander = start(server.ws_url)
    # The bystander keeps talking (in real time) while the bad client misbehaves.
    stop = threading.Event()
    pcm = frames(noise(10.0), 0.05)

    def talk() -> None:
        for f in pcm:
            if stop.wait(0.05):
                return
            bystander.send(f)

    talker = threading.Thread(target=talk)
    talker.start()
    try:
        ws = start(server.ws_url) if started else dial(server.ws_url)
        act(ws)
        refused(ws, code, said)
    finally:
        stop.set()
        talker.join()
    events, closed = finish(bystander, noise(0.5))
    assert closed == 1000 and any(e["type"] == "partial" for e in events)
    wait_streams(server, 0)


def test_a_client_that_vanishes_mid_stream_is_dropped(server):
    wait_streams(server, 0)
    ws = start(server.ws_url)
    for f in frames(noise(0.5)):
        ws.send(f)
    vanish(ws)
    wait_streams(server, 0)
    assert finish(start(server.ws_url), noise(0.3))[1] == 1000


@pytest.mark.slow  # 1,000 streams on a shared machine: about a minute
def test_a_thousand_streams_leave_the_rss_where_it_was(tiny_stream):
    with serve_process("--checkpoint", str(tiny_stream)) as running:
        pcm = noise(0.2)

        def cycles(n: int) -> None:
            for i in range(n):
                ws = start(running.ws_url)
                ws.send(pcm)
                if i % 2:
                    ws.send(END)
                    assert until_closed(ws)[1] == 1000
                else:
                    vanish(ws)  # half of them

        cycles(200)  # warm: allocator pools, first batches
        wait_streams(running, 0)
        baseline = rss_bytes(running.process.pid)
        cycles(1000)
        wait_streams(running, 0)
        after = rss_bytes(running.process.pid)
        assert health(running)["dispatch"]["streams_served"] == 1200
    growth = (after - baseline) / 2**20
    assert growth < 8.0, f"RSS {baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB"


# -- with a trained model: the words -------------------------------------------------


@pytest.fixture(scope="module")
def speech(espeak_corpus, tmp_path_factory) -> Path:
    """Two sentences the trained fixtures know, a second of silence around and
    between."""
    files = sorted((espeak_corpus / "train" / "100").rglob("*.flac"))[:2]
    silence = np.zeros(RATE, dtype=np.float32)
    parts = [silence]
    for f in files:
        parts += [load_audio(f, RATE).numpy(), silence]
    path = tmp_path_factory.mktemp("speech") / "two.wav"
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path


def transcribe_text(path: Path, checkpoint: Path, capsys) -> str:
    argv = ["transcribe", str(path), "--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    return capsys.readouterr().out.strip()


def pcm_of(path: Path) -> bytes:
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE
    return audio.astype("<i2").tobytes()


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one-by-one"])
def test_the_finals_of_a_stream_are_asr_transcribe(
    streaming_checkpoint, speech, capsys, batch
):
    expected = transcribe_text(speech, streaming_checkpoint, capsys)
    assert len(expected.split()) >= 4, expected
    options = ServeOptions(checkpoint=streaming_checkpoint, batch=batch)
    with serving(options) as running:
        results = []
        pcm = pcm_of(speech)
        sockets = [start(running.ws_url) for _ in range(3)]
        threads = [
            threading.Thread(target=lambda ws=ws: results.append(finish(ws, pcm)))
            for ws in sockets
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert len(results) == 3
    for events, code in results:
        assert code == 1000
        finals = [e for e in events if e["type"] == "final"]
        assert " ".join(e["text"] for e in finals) == expected
        for e in finals:
            assert e["words"] and e["start"] <= e["words"][0]["start"]
            assert all(0 <= w["confidence"] <= 1 for w in e["words"])


def documented_client() -> str:
    text = (REPO / "docs" / "server.md").read_text()
    section = text.split("## A Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_client_prints_the_finals(
    streaming_checkpoint, speech, tmp_path, capsys
):
    code = documented_client()
    assert len(code.strip().splitlines()) <= 25
    expected = transcribe_text(speech, streaming_checkpoint, capsys)
    client = tmp_path / "client.py"
    client.write_text(code)
    token = "t0ken"
    with serving(ServeOptions(checkpoint=streaming_checkpoint, token=token)) as running:
        done = subprocess.run(
            [sys.executable, str(client), str(speech), running.ws_url, token],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    texts = [line.split(maxsplit=2)[2] for line in lines]
    assert " ".join(texts) == expected
    starts = [float(line.split()[0]) for line in lines]
    assert starts == sorted(starts)


def test_sigterm_gives_every_open_stream_its_finals(
    streaming_checkpoint, speech, tmp_path, capsys
):
    # The speech without its trailing silence: the last segment is still open when
    # the signal comes, so its final can only come from the shutdown's drain.
    audio, _ = sf.read(speech, dtype="int16")
    cut = tmp_path / "open.wav"
    sf.write(cut, audio[: len(audio) - RATE], RATE, subtype="PCM_16")
    expected = transcribe_text(cut, streaming_checkpoint, capsys)
    duration = sf.info(cut).duration
    pcm = pcm_of(cut)
    with serve_process("--checkpoint", str(streaming_checkpoint)) as running:
        sockets = [start(running.ws_url) for _ in range(3)]
        seen: list[list[dict]] = [[] for _ in sockets]
        for ws in sockets:
            for f in frames(pcm):
                ws.send(f)
        # Until every stream's audio has been through the model but its lookahead.
        for ws, events in zip(sockets, seen, strict=True):
            while not events or events[-1].get("end", 0) < duration - 0.5:
                events.append(json.loads(ws.recv(timeout=120)))
        running.process.send_signal(signal.SIGTERM)
        for ws, events in zip(sockets, seen, strict=True):
            more, code = until_closed(ws)
            assert code == 1001
            assert any(e["type"] == "final" for e in more), more  # the drain's
            finals = [e["text"] for e in events + more if e["type"] == "final"]
            assert " ".join(finals) == expected
        assert running.process.wait(60) == 0
    assert "asr serve: stopped (3 open streams given their finals)" in "".join(
        running.stderr
    )
