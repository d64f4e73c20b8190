"""The ``asr serve`` application: Starlette routes over one loaded model.

- ``GET /``: the page (microphone -> ``/stream`` -> live text), with its static
  files under ``/static/``, shipped inside the package;
- ``GET /health``: JSON: the model, its sample rate, open streams, the dispatcher's
  statistics;
- ``POST /transcribe``: an audio file as the raw body or as a multipart upload;
  answers the JSON document of ``asr transcribe --format json`` (the same code:
  :class:`asr.transcribe.Transcriber` and :func:`asr.formats.render`);
- ``WS /stream``: live audio (:mod:`asr.serve.streams`).

Starlette rather than FastAPI on top of it: these endpoints take raw bytes, a
multipart file and WebSocket frames, not typed JSON bodies, so FastAPI's
validation and OpenAPI layer would add a dependency and nothing used. Starlette is
the ASGI toolkit under FastAPI, and uvicorn the server most Python model servers
run on.

Every request and WebSocket passes :class:`Guard` first: the token when one is set
(constant-time comparison), and no browser request from another site's page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from asr.audio import SILENCE_DB
from asr.serve.limits import StreamLimits, UploadLimits
from asr.serve.streams import POLICY, UNSUPPORTED, Dispatcher, error_message

__all__ = ["Guard", "ServeOptions", "Service", "create_app"]

log = logging.getLogger("asr.serve")

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_COOKIE = "asr_token"


class UploadError(Exception):
    """An upload refused: the HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``asr serve`` is started with (its command-line options)."""

    checkpoint: Path
    lm: Path | None = None
    alpha: float | None = None
    beta: float | None = None
    beam_width: int | None = None
    silence_db: float | None = SILENCE_DB
    device: str = "cpu"
    threads: int = 1
    token: str | None = None
    batch: bool = True
    streams: StreamLimits = field(default_factory=StreamLimits)
    uploads: UploadLimits = field(default_factory=UploadLimits)


class Service:
    """The loaded model, ready to serve: the offline recognizer and transcriber for
    ``/transcribe``, and, for a checkpoint that can stream, the streaming model and
    the dispatcher for ``/stream`` (:attr:`streaming_error` says why not)."""

    def __init__(self, options: ServeOptions) -> None:
        import torch

        from asr.decoding import make_decoder
        from asr.inference import load_model
        from asr.transcribe import Transcriber, model_summary

        self.options = options
        # The server owns its process: one intra-op thread by default, as asr
        # transcribe (whose JSON /transcribe answers with, "threads" included).
        torch.set_num_threads(options.threads)
        self.recognizer = load_model(options.checkpoint, options.device)
        decoder_settings = {
            "alpha": options.alpha,
            "beta": options.beta,
            "beam_width": options.beam_width,
        }

        def decoder() -> Any:
            return make_decoder(
                self.recognizer.tokenizer.vocab,
                options.checkpoint,
                options.lm,
                **decoder_settings,
            )

        self.transcriber = Transcriber(
            self.recognizer, decoder(), silence_db=options.silence_db
        )
        self.header = {
            "model": model_summary(self.recognizer, options.checkpoint),
            "decoder": self.transcriber.settings(),
        }
        # One transcription at a time: the worker threads would only share the
        # cores, and the transcriber keeps per-run statistics.
        self.transcribe_lock = asyncio.Lock()
        self.streaming_error: str | None = None
        self.model: Any = None
        self.dispatcher: Dispatcher | None = None
        from asr.streaming import Session, StreamingError, StreamingModel, run_batch

        try:
            self.model = StreamingModel.load(options.checkpoint, options.device)
        except StreamingError as err:
            self.streaming_error = str(err)
            return
        # The finals' decoder (beam search + LM when given) is the streams' own:
        # it runs in the dispatcher's thread, the transcriber's in another.
        stream_decoder = decoder()
        endpoint = options.streams.endpoint_seconds
        self.dispatcher = Dispatcher(
            self.model,
            lambda: Session(self.model, stream_decoder, endpoint_seconds=endpoint),
            run_batch,
            options.streams,
            batch=options.batch,
        )

    def health(self) -> dict[str, Any]:
        d = self.dispatcher
        return {
            "status": "ok",
            "model": self.header["model"],
            "decoder": self.header["decoder"],
            "sample_rate": self.recognizer.sample_rate,
            "streaming": self.dispatcher is not None,
            "streaming_error": self.streaming_error,
            "latency": None
            if self.model is None
            else round(float(self.model.latency_seconds), 3),
            "streams": 0 if d is None else len(d.streams),
            "max_streams": self.options.streams.max_streams,
            "dispatch": None if d is None else d.stats(),
        }

    def transcribe_file(self, path: str, name: str) -> tuple[int, str]:
        """Transcribe one saved upload (in a worker thread): the HTTP status and the
        JSON text of ``asr transcribe --format json``, the upload named ``name``."""
        from asr.audio import AudioError, audio_info
        from asr.formats import render
        from asr.transcribe import Failure, Source

        try:
            info = audio_info(path)
        except AudioError as err:
            return 400, _error_json(f"{name}: {err.reason}")
        limit = self.options.uploads.max_upload_seconds
        if info.duration > limit:
            return 413, _error_json(
                f"{name}: {info.duration:.1f} s of audio; the limit is {limit:g} s "
                "(--max-upload-seconds)"
            )
        source = Source(path=path, name=path, stem=Path(path).stem)
        (result,) = self.transcriber.transcribe([source])
        if isinstance(result, Failure):
            return 400, _error_json(f"{name}: {result.reason}")
        named = Source(path=name, name=name, stem=Path(name).stem)
        result = dataclasses.replace(result, source=named)
        return 200, render("json", [result], self.header)


def _error_json(message: str) -> str:
    import json

    return json.dumps({"error": message})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# -- the guard: token and origin, on every request and WebSocket -------------------


class Guard:
    """ASGI middleware in front of every route.

    With a token, a request passes only if it carries it: ``Authorization: Bearer
    TOKEN``, the ``token`` query parameter (what a browser's WebSocket can send),
    or the cookie that ``GET /?token=TOKEN`` sets for the page's own requests;
    compared with :func:`hmac.compare_digest`, in constant time. Whatever the
    token, a browser request made by another site's page (an ``Origin`` that is not
    this server's) is refused: a page elsewhere must not use the microphone
    server of someone who visits it."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = None if token is None else token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        problem = self._problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        if scope["type"] == "http":
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = JSONResponse({"error": message}, status, headers=extra)
            await response(scope, receive, send)
            return
        # A WebSocket: accept, so that the client can read why, then close.
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": error_message(POLICY, message)})
        await send({"type": "websocket.close", "code": POLICY, "reason": message})

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is not None and origin != "null":
            host = headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                return 403, f"a request from another site ({origin}) is refused"
        if self.token is None:
            return None
        for given in _tokens(scope, headers):
            if hmac.compare_digest(given.encode("utf-8"), self.token):
                return None
        return 401, "missing or wrong token"


def _tokens(scope: Scope, headers: dict[str, str]) -> list[str]:
    found = []
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found.extend(query.get("token", [])[:1])
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            found.append(value)
    return found


# -- routes ---------------------------------------------------------------------


def create_app(service: Service) -> Starlette:
    """The ASGI application serving ``service`` (the dispatcher starts and stops
    with the application's lifespan)."""
    options = service.options

    async def page(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        token = request.query_params.get("token")
        if options.token is not None and token is not None:
            # Passed the guard: the page's own requests (its scripts, its
            # WebSocket) carry the token as a cookie from here on.
            response.set_cookie(
                TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/"
            )
        return response

    async def health(request: Request) -> Response:
        return JSONResponse(service.health())

    async def transcribe(request: Request) -> Response:
        limit = options.uploads.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, _too_large(int(declared), limit))
        with tempfile.TemporaryDirectory(prefix="asr-serve-") as tmp:
            path = os.path.join(tmp, "upload")
            try:
                name = await _save_upload(request, path, limit)
            except UploadError as err:
                return _error(err.status, str(err))
            async with service.transcribe_lock:
                status, text = await asyncio.to_thread(
                    service.transcribe_file, path, name
                )
        return Response(text, status, media_type="application/json")

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        if service.dispatcher is None:
            message = f"this server's model cannot stream: {service.streaming_error}"
            await ws.send_text(error_message(UNSUPPORTED, message))
            await ws.close(UNSUPPORTED, message[:120])
            return
        await service.dispatcher.serve(ws)

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if service.dispatcher is not None:
            service.dispatcher.start()
        try:
            yield
        finally:
            if service.dispatcher is not None:
                await service.dispatcher.stop()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/transcribe", transcribe, methods=["POST"]),
            WebSocketRoute("/stream", stream),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=_contextmanager(lifespan),
    )
    app.add_middleware(Guard, token=options.token)
    return app


def _contextmanager(fn: Any) -> Any:
    from contextlib import asynccontextmanager

    return asynccontextmanager(fn)


def _too_large(size: int, limit: int) -> str:
    return f"an upload of {size} bytes or more; the limit is {limit} bytes"


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request's body, refused once it passes ``limit`` bytes (a chunked body
    declares no length)."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadError(413, _too_large(total, limit))
        yield chunk


async def _save_upload(request: Request, path: str, limit: int) -> str:
    """Write the upload to ``path``; return the name it is reported under: the
    multipart file's name, or ``upload`` for a raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        from starlette.formparsers import MultiPartException, MultiPartParser

        parser = MultiPartParser(
            request.headers, _limited(request, limit), max_files=1, max_fields=16
        )
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise UploadError(400, f"a bad multipart upload: {err.message}") from None
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not files:
            raise UploadError(400, "the multipart upload holds no file")
        upload = files[0]
        try:
            with open(path, "wb") as out:
                while block := await upload.read(1 << 20):
                    out.write(block)
        finally:
            await form.close()
        return upload.filename or "upload"
    with open(path, "wb") as out:
        async for chunk in _limited(request, limit):
            out.write(chunk)
    if os.path.getsize(path) == 0:
        raise UploadError(400, "an empty upload: send the audio file as the body")
    return "upload"
