"""``WS /stream``: the protocol of one stream, its limits, and the batch dispatcher.

A client sends a JSON start message (``{"sample_rate": 16000, "format": "s16le"}``),
then binary frames of 16-bit little-endian mono PCM, then ``{"type": "end"}``; the
server answers ``{"type": "ready", ...}``, then the partial and final events of
:mod:`asr.streaming`, and closes with code 1000 after the last final. A client that
breaks a rule gets one ``{"type": "error", "code": ..., "message": ...}`` and a
close with that code (RFC 6455, 7.4.1); the other streams are served on.

Batch dispatch (DeepSpeech2 paper, section 7): one dispatcher task takes the audio
waiting in every open stream and runs :func:`asr.streaming.run_batch` over all of
them at once, in a worker thread so that the event loop keeps reading and writing
sockets meanwhile. While one batch runs, the next batch's audio gathers, so the
batch grows with the load by itself and no stream waits for a timer; the model's
cost per stream falls as streams are added (docs/benchmarks.md). ``batch=False``
runs the same streams one by one, the benchmark's reference.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from asr.serve.limits import StreamLimits

__all__ = ["CLOSE_CODES", "Dispatcher", "ProtocolError", "Stream"]

log = logging.getLogger("asr.serve")

# Close codes (RFC 6455, 7.4.1) and when the server uses them.
NORMAL = 1000  # the client's end: every final sent
GOING_AWAY = 1001  # the server shuts down: every final sent first
UNSUPPORTED = 1003  # unknown format or sample rate; a model that cannot stream
INVALID = 1007  # bad JSON, an odd number of bytes of 16-bit PCM
POLICY = 1008  # no start message, idle timeout, a flood of frames, a bad token
TOO_BIG = 1009  # a message over --max-message-bytes
INTERNAL = 1011  # the model failed on this stream's audio
TRY_AGAIN = 1013  # --max-streams reached, or the server is shutting down
CLOSE_CODES = {
    NORMAL: "normal closure: the stream ended and every final was sent",
    GOING_AWAY: "the server is shutting down; every final was sent first",
    UNSUPPORTED: "unsupported format or sample rate, or a model that cannot stream",
    INVALID: "invalid data: bad JSON, or an odd number of bytes of s16le PCM",
    POLICY: "protocol or policy: no start message, idle timeout, too many messages "
    "a second, an unknown message, a missing or wrong token",
    TOO_BIG: "a message larger than the server's limit",
    INTERNAL: "the model failed on the stream's audio",
    TRY_AGAIN: "too many open streams, or the server is shutting down: try later",
}

FORMATS = ("s16le",)
# A client's results queued but not yet written to its socket: a client that stops
# reading is closed rather than let the queue grow without bound.
MAX_OUTBOX = 1000


class ProtocolError(Exception):
    """A client broke a rule: the stream gets ``message``, then a close ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Vanished(Exception):
    """The client disconnected without an end message."""


class _Bucket:
    """A token bucket: ``rate`` messages a second, at most a second's worth saved."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


_CLOSE = object()  # the outbox's last item: (_CLOSE, code, reason)


class Stream:
    """One client's stream: its decoding session, the audio waiting for the model
    (with each chunk's arrival time, for the latency statistics) and the queue of
    messages to send."""

    def __init__(self, sample_rate: int, limits: StreamLimits) -> None:
        self.sample_rate = sample_rate
        self.limits = limits
        self.session: Any = None  # asr.streaming.Session once started
        self.pending: list[np.ndarray] = []
        self.pending_samples = 0
        self.arrivals: list[float] = []
        self.ending = False  # no more audio: finish after the pending audio
        self.shutdown = False  # ended by the server's shutdown, not the client
        self.closed = False  # nothing more is sent or computed for it
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.room = asyncio.Event()  # set while the pending audio is under its bound
        self.room.set()
        self.reader: asyncio.Task[None] | None = None

    def add(self, pcm: np.ndarray) -> None:
        self.pending.append(pcm)
        self.pending_samples += len(pcm)
        self.arrivals.append(time.perf_counter())
        if self.pending_samples > self.limits.max_pending_seconds * self.sample_rate:
            self.room.clear()

    def take(self) -> tuple[np.ndarray, list[float]]:
        """The pending audio as one chunk, and the arrival times of its parts."""
        if len(self.pending) == 1:
            chunk = self.pending[0]
        else:
            chunk = np.concatenate(self.pending) if self.pending else _EMPTY
        arrivals = self.arrivals
        self.pending, self.arrivals, self.pending_samples = [], [], 0
        self.room.set()
        return chunk, arrivals

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.outbox.qsize() >= MAX_OUTBOX:
            self.fail(POLICY, f"more than {MAX_OUTBOX} results unread: not reading")
            return
        self.outbox.put_nowait(message)

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close with ``code``; nothing more after."""
        if self.closed:
            return
        self.closed = True
        self.room.set()
        self.outbox.put_nowait((_CLOSE, code, reason))

    def fail(self, code: int, message: str) -> None:
        """One error message, then the close."""
        if self.closed:
            return
        self.outbox.put_nowait({"type": "error", "code": code, "message": message})
        self.close(code, message)


_EMPTY = np.zeros(0, dtype=np.float32)


def error_message(code: int, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def parse_start(text: str, sample_rate: int) -> None:
    """Check a start message; raise :class:`ProtocolError` naming the problem."""
    try:
        start = json.loads(text)
    except ValueError as err:
        raise ProtocolError(INVALID, f"the start message is not JSON ({err})") from None
    if not isinstance(start, dict):
        raise ProtocolError(INVALID, "the start message must be a JSON object")
    if start.get("type", "start") != "start":
        raise ProtocolError(
            POLICY,
            f"expected a start message first, got type {start.get('type')!r}",
        )
    fmt = start.get("format", "s16le")
    if fmt not in FORMATS:
        raise ProtocolError(
            UNSUPPORTED,
            f"unknown format {fmt!r}; this server takes {', '.join(FORMATS)}",
        )
    rate = start.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ProtocolError(
            INVALID, f"the start message needs a numeric sample_rate, got {rate!r}"
        )
    if rate != sample_rate:
        raise ProtocolError(
            UNSUPPORTED,
            f"sample_rate {rate!r} is not the model's; send {sample_rate} Hz audio",
        )


class Dispatcher:
    """The open streams and the one task that runs the model over them.

    Args:
        model: an :class:`asr.streaming.StreamingModel`.
        make_session: a new :class:`asr.streaming.Session` for a stream.
        run_batch: :func:`asr.streaming.run_batch`.
        limits: the clients' limits.
        batch: run all waiting streams through the model together (batch
            dispatch); ``False`` runs them one after another.
    """

    def __init__(
        self,
        model: Any,
        make_session: Callable[[], Any],
        run_batch: Callable[[list[Any], list[np.ndarray]], list[list[dict]]],
        limits: StreamLimits,
        batch: bool = True,
    ) -> None:
        self.model = model
        self.make_session = make_session
        self.run_batch = run_batch
        self.limits = limits
        self.batch = batch
        self.streams: set[Stream] = set()  # connected, started or not
        self.draining = False
        self._wake = asyncio.Event()
        # One thread: the model's batches run one at a time, in order, off the loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="asr-stream")
        self._task: asyncio.Task[None] | None = None
        # Seconds from a chunk's arrival to the end of the model step that took it
        # (its partial is then queued to the client): the latest 100,000.
        self.latencies: deque[float] = deque(maxlen=100_000)
        self.batches = 0
        self.batched_streams = 0
        self.served = 0

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def drain(self, timeout: float) -> int:
        """Shutdown: refuse new streams, stop reading the open ones, and give each
        its final results (what it sent so far), then close it with 1001. Returns
        the number of streams finished; those still open after ``timeout`` seconds
        are closed without their finals."""
        self.draining = True
        open_streams = [s for s in self.streams if not s.closed]
        started = sum(s.session is not None for s in open_streams)
        for s in open_streams:
            if s.reader is not None:
                s.reader.cancel()
            if s.session is None:
                s.fail(GOING_AWAY, "the server is shutting down")
            else:
                s.ending = s.shutdown = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while any(not s.closed for s in open_streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for s in open_streams:
            s.fail(GOING_AWAY, "the server is shutting down")
        # The writers send the finals and the close frames.
        while any(not s.outbox.empty() for s in open_streams):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        return started

    def stats(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000.0
        latency = {"count": int(lat.size)}
        if lat.size:
            latency |= {
                "p50": round(float(np.percentile(lat, 50)), 2),
                "p95": round(float(np.percentile(lat, 95)), 2),
                "max": round(float(lat.max()), 2),
            }
        return {
            "batch": self.batch,
            "batches": self.batches,
            "mean_batch": round(self.batched_streams / self.batches, 2)
            if self.batches
            else 0.0,
            "stream_steps": self.batched_streams,
            "streams_served": self.served,
            "latency_ms": latency,
        }

    # -- one connection ---------------------------------------------------------

    async def serve(self, ws: Any) -> None:
        """Serve one accepted Starlette WebSocket until it closes."""
        stream = Stream(self.model.sample_rate, self.limits)
        if self.draining:
            await _refuse(ws, TRY_AGAIN, "the server is shutting down")
            return
        if len(self.streams) >= self.limits.max_streams:
            await _refuse(
                ws,
                TRY_AGAIN,
                f"too many open streams (the limit is {self.limits.max_streams}, "
                "--max-streams); try again later",
            )
            return
        self.streams.add(stream)
        try:
            stream.reader = asyncio.get_running_loop().create_task(
                self._read(ws, stream)
            )
            writer = asyncio.get_running_loop().create_task(_write(ws, stream))
            reader = stream.reader
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():  # closed by the server: stop reading
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            elif not reader.cancelled():
                err = reader.exception()
                if isinstance(err, ProtocolError):
                    stream.fail(err.code, err.message)
                elif isinstance(err, _Vanished):
                    stream.close(NORMAL)  # nobody to tell; stop computing for it
                elif err is not None:
                    log.error("stream reader failed: %r", err)
                    stream.fail(INTERNAL, "internal error")
            await writer
        finally:
            stream.closed = True
            stream.session = None
            self.streams.discard(stream)
            self.served += 1

    async def _read(self, ws: Any, stream: Stream) -> None:
        limits = self.limits
        bucket = _Bucket(limits.max_messages_per_second)
        while True:
            await stream.room.wait()
            if stream.closed:
                return
            try:
                message = await asyncio.wait_for(ws.receive(), limits.idle_timeout)
            except TimeoutError:
                raise ProtocolError(
                    POLICY,
                    f"no message for {limits.idle_timeout:g} s (--idle-timeout)",
                ) from None
            if message["type"] == "websocket.disconnect":
                raise _Vanished
            data, text = message.get("bytes"), message.get("text")
            size = len(data) if data is not None else len((text or "").encode())
            if size > limits.max_message_bytes:
                raise ProtocolError(
                    TOO_BIG,
                    f"a message of {size} bytes; the limit is "
                    f"{limits.max_message_bytes} (--max-message-bytes)",
                )
            if not bucket.take():
                raise ProtocolError(
                    POLICY,
                    f"more than {limits.max_messages_per_second:g} messages a "
                    "second; send larger frames",
                )
            if stream.session is None:
                if text is None:
                    raise ProtocolError(
                        POLICY,
                        'expected a start message first: {"sample_rate": '
                        f'{stream.sample_rate}, "format": "s16le"}}',
                    )
                parse_start(text, stream.sample_rate)
                stream.session = self.make_session()
                stream.send(
                    {
                        "type": "ready",
                        "sample_rate": stream.sample_rate,
                        "format": "s16le",
                        "latency": round(float(self.model.latency_seconds), 3),
                    }
                )
                continue
            if data is not None:
                if len(data) % 2:
                    raise ProtocolError(
                        INVALID,
                        f"a frame of {len(data)} bytes: s16le PCM has 2 bytes a sample",
                    )
                if data:
                    pcm = np.frombuffer(data, dtype="<i2").astype(np.float32)
                    pcm *= 1.0 / 32768.0
                    stream.add(pcm)
                    self._wake.set()
                continue
            try:
                msg = json.loads(text or "")
            except ValueError as err:
                raise ProtocolError(
                    INVALID, f"a message that is not JSON ({err})"
                ) from None
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind != "end":
                raise ProtocolError(
                    POLICY, f'unknown message {kind!r}; expected binary PCM or "end"'
                )
            stream.ending = True
            self._wake.set()
            return

    # -- the dispatcher ---------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._step()
            except Exception:  # never leave the other streams without a dispatcher
                log.exception("the stream dispatcher failed; going on")

    async def _step(self) -> None:
        """One batch: every stream's waiting audio through the model together."""
        work = [
            s
            for s in self.streams
            if not s.closed and s.session is not None and (s.pending or s.ending)
        ]
        if not work:
            return
        taken = [s.take() for s in work]
        finishing = [s for s in work if s.ending]
        sessions = [s.session for s in work]
        try:
            events, finals = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                self._compute,
                sessions,
                [chunk for chunk, _ in taken],
                [s.session for s in finishing],
            )
        except Exception as err:  # a model failure ends these streams, no other
            log.exception("the model failed on %d streams", len(work))
            for s in work:
                s.fail(INTERNAL, f"the model failed: {type(err).__name__}")
            return
        done = time.perf_counter()
        self.batches += 1
        self.batched_streams += len(work)
        for s, (_, arrivals), evs in zip(work, taken, events, strict=True):
            self.latencies.extend(done - t for t in arrivals)
            for e in evs:
                s.send(e)
        for s, evs in zip(finishing, finals, strict=True):
            for e in evs:
                s.send(e)
            if s.shutdown:
                s.close(GOING_AWAY, "the server is shutting down")
            else:
                s.close(NORMAL)
        if any(s.pending or s.ending for s in self.streams if not s.closed):
            self._wake.set()

    def _compute(
        self,
        sessions: list[Any],
        chunks: list[np.ndarray],
        finishing: list[Any],
    ) -> tuple[list[list[dict]], list[list[dict]]]:
        """In the worker thread: one model step over the streams (or one per
        stream without batch dispatch), then the finals of those that end."""
        if self.batch:
            events = self.run_batch(sessions, chunks)
        else:
            events = [
                self.run_batch([s], [c])[0]
                for s, c in zip(sessions, chunks, strict=True)
            ]
        finals = [s.finish() for s in finishing]
        return events, finals


async def _refuse(ws: Any, code: int, message: str) -> None:
    try:
        await ws.send_text(error_message(code, message))
        await ws.close(code, message[:120])
    except Exception:  # the client left first: nothing to tell it
        pass


async def _write(ws: Any, stream: Stream) -> None:
    """Send the stream's messages in order; the close frame last."""
    while True:
        item = await stream.outbox.get()
        try:
            if isinstance(item, tuple) and item[0] is _CLOSE:
                await ws.close(item[1], item[2][:120])
                return
            await ws.send_text(json.dumps(item))
        except Exception:  # a client that vanished: its socket is gone
            stream.closed = True
            if stream.reader is not None:
                stream.reader.cancel()
            return
