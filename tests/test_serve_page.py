"""The page of asr serve in a real browser (headless Chromium, its fake microphone
playing a WAV file): what its AudioWorklet sends is the file's audio at 16 kHz, and
the text it shows is what `asr transcribe` gives for the same file."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from asr.serve.app import STATIC
from asr.serve.server import listen
from tests.browser import chromium, wait_for

pytestmark = pytest.mark.slow  # a browser start and seconds of real-time audio

RATE = 16000


def recorder(frames: list[bytes]) -> Starlette:
    """The page's own files and a /stream that keeps what the page sends: the
    worklet's output, with no model in between."""

    async def page(request):
        return FileResponse(STATIC / "index.html")

    async def health(request):
        return JSONResponse(
            {
                "sample_rate": RATE,
                "streaming": True,
                "latency": 0.0,
                "streams": 0,
                "max_streams": 1,
                "model": {"checkpoint": "recorder", "parameters": 0},
            }
        )

    async def stream(ws):
        await ws.accept()
        start = await ws.receive_json()
        assert start == {"sample_rate": RATE, "format": "s16le"}
        await ws.send_json({"type": "ready", "latency": 0.0})
        while True:
            message = await ws.receive()
            if message.get("bytes") is not None:
                frames.append(message["bytes"])
            elif message["type"] == "websocket.disconnect":
                return
            else:
                n = sum(len(f) for f in frames) // 2
                text = f"{n} samples"
                await ws.send_json(
                    {"type": "final", "text": text, "start": 0.0, "end": n / RATE}
                )
                await ws.close(1000)
                return

    return Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            WebSocketRoute("/stream", stream),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]
    )


def run_app(app: Starlette):
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(app, ws="websockets-sansio", log_level="warning")
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, sock.getsockname()[1]


def test_the_worklet_sends_the_microphone_at_16khz(tmp_path):
    # 1 s of silence (the capture starts before the worklet is running), then
    # 2 s of noise band-limited to 6 kHz (unlike a tone, it aligns one way only),
    # then silence.
    rng = np.random.default_rng(0)
    spectrum = np.fft.rfft(rng.standard_normal(2 * RATE))
    spectrum[np.fft.rfftfreq(2 * RATE, 1 / RATE) > 6000] = 0
    signal = np.fft.irfft(spectrum, 2 * RATE)
    signal *= 0.2 / np.abs(signal).max()
    audio = np.concatenate([np.zeros(RATE), signal, np.zeros(RATE)])
    wav = tmp_path / "mic.wav"
    sf.write(wav, audio, RATE, subtype="PCM_16")
    frames: list[bytes] = []
    server, thread, port = run_app(recorder(frames))
    try:
        with chromium(wav, tmp_path) as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            wait_for(
                lambda: driver.find_element("id", "start").is_enabled(),
                20,
                "the Start button",
                driver,
            )
            driver.find_element("id", "start").click()
            wait_for(
                lambda: driver.execute_script("return window.asrState.ready"),
                20,
                "the ready message",
                driver,
            )
            # The file plays in real time; wait until it has played out.
            wait_for(
                lambda: sum(len(f) for f in frames) >= 2 * 4.2 * RATE,
                30,
                "4.2 s of audio from the worklet",
                driver,
            )
            driver.find_element("id", "stop").click()
            wait_for(
                lambda: driver.execute_script("return window.asrState.closed"),
                20,
                "the close",
                driver,
            )
            shown = driver.find_element("css selector", "#finals .text").text
    finally:
        server.should_exit = True
        thread.join(10)
    got = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64) / 32768
    assert shown == f"{len(got)} samples"
    # Align the recording on the source: the capture began at an unknown point of
    # the leading silence, and Chromium's resampling to the context's rate and the
    # worklet's back to 16 kHz may place the samples a fraction of a sample apart
    # (a pure delay, harmless to the model): the best delay, to 1/100 sample.
    n = 1 << int(np.ceil(np.log2(len(got) + len(audio))))
    corr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(audio, n)), n)
    lag = int(np.argmax(corr))
    lag = lag - n if lag > n // 2 else lag
    rec = got[RATE + lag + 100 : 3 * RATE + lag - 100]  # the noise, edges aside
    assert len(rec) == 2 * RATE - 200, (lag, len(got))
    spectrum = np.fft.rfft(audio)
    phase = -2j * np.pi * np.fft.rfftfreq(len(audio))

    def snr(delay: float) -> float:
        ref = np.fft.irfft(spectrum * np.exp(phase * delay), len(audio))
        ref = ref[RATE + 100 : 3 * RATE - 100]
        return 10 * np.log10(np.sum(ref**2) / np.sum((rec - ref) ** 2))

    best = max(np.linspace(-1, 1, 201), key=snr)
    gain = np.sqrt(np.mean(rec**2) / np.mean(audio[RATE : 3 * RATE] ** 2))
    assert 0.95 < gain < 1.05, gain
    assert snr(best) > 30.0, f"{snr(best):.1f} dB at a delay of {best:.2f} samples"


def test_the_page_shows_the_text_of_asr_transcribe(
    streaming_checkpoint, espeak_corpus, tmp_path, capsys, monkeypatch
):
    """The fake microphone plays two sentences; the finals the page shows, joined,
    are `asr transcribe`'s text of the audio the microphone delivered (what the
    server received, kept aside). Through a token in the page's address, as a
    user on another machine would open it.

    Of that audio, not of the WAV itself: the page starts hearing the file some
    tens of milliseconds in, at a point no one chooses, and shifting the audio by
    a fraction of the model's 20 ms output frame changes the greedy text of the
    fixture's small model (7 of 8 random shifts did). That the delivered audio
    is the WAV is the worklet test's part (above: > 30 dB SNR)."""
    from asr.audio import load_audio
    from asr.cli import main
    from asr.serve import streams
    from asr.serve.app import ServeOptions
    from tests.serving import serving

    files = sorted((espeak_corpus / "train" / "100").rglob("*.flac"))[2:4]
    silence = np.zeros(RATE, dtype=np.float32)
    parts = [silence]  # lost in part while the page starts its worklet
    for f in files:
        parts += [load_audio(f, RATE).numpy(), silence]
    audio = np.concatenate(parts)
    wav = tmp_path / "speech.wav"
    sf.write(wav, audio, RATE, subtype="PCM_16")

    received: list[np.ndarray] = []
    add = streams.Stream.add

    def keep(self, pcm):
        received.append(pcm.copy())
        add(self, pcm)

    monkeypatch.setattr(streams.Stream, "add", keep)
    options = ServeOptions(checkpoint=streaming_checkpoint, token="page-t0ken")
    with serving(options) as running, chromium(wav, tmp_path) as driver:
        driver.get(f"{running.url}/?token=page-t0ken")
        start = driver.find_element("id", "start")
        wait_for(start.is_enabled, 20, "the Start button", driver)
        start.click()
        wait_for(
            lambda: driver.execute_script("return window.asrState.ready"),
            20,
            "the ready message",
            driver,
        )
        time.sleep(len(audio) / RATE)  # the file plays in real time
        driver.find_element("id", "stop").click()
        wait_for(
            lambda: driver.execute_script("return window.asrState.closed"),
            30,
            "the end of the stream",
            driver,
        )
        shown = [e.text for e in driver.find_elements("css selector", "#finals .text")]
        times = [e.text for e in driver.find_elements("css selector", "#finals .time")]
        assert driver.execute_script("return window.asrState.closed") == 1000
        assert driver.find_element("id", "status").text == "done"
        driver.save_screenshot(str(tmp_path / "page.png"))
    heard = np.concatenate(received)
    assert len(heard) > len(audio) - RATE  # at most the leading second lost
    sf.write(tmp_path / "heard.wav", heard, RATE, subtype="PCM_16")
    argv = ["transcribe", str(tmp_path / "heard.wav")]
    assert main([*argv, "--checkpoint", str(streaming_checkpoint)]) == 0
    expected = capsys.readouterr().out.strip()
    assert len(expected.split()) >= 4, expected
    assert " ".join(shown) == expected
    assert all(re.fullmatch(r"0:\d\d\.\d\d – 0:\d\d\.\d\d", t) for t in times), times
    assert (tmp_path / "page.png").stat().st_size > 10_000
