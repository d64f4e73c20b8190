"""``asr serve``: argument parsing, the address and token rules, and the run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from asr.cli.transcribe import add_gate_options, silence_db

if TYPE_CHECKING:
    from asr.serve.app import ServeOptions

__all__ = ["add_serve_parser", "run_serve"]

TOKEN_ENV = "ASR_SERVE_TOKEN"

_EPILOG = f"""\
Endpoints: GET / (a page that transcribes the microphone live), GET /health,
POST /transcribe (an audio file as the body or a multipart upload; answers the JSON
of `asr transcribe --format json`), WS /stream (JSON start message, binary 16-bit
PCM frames, {{"type": "end"}}; partial and final results as JSON). The protocol,
its errors and close codes, and a Python client: docs/server.md.

The server binds 127.0.0.1 unless told otherwise; any other address needs --token
(or the {TOKEN_ENV} environment variable, which `ps` does not show) or an explicit
--no-auth. With a token every request must carry it: `Authorization: Bearer TOKEN`,
or ?token=TOKEN (open the page as http://HOST:PORT/?token=TOKEN). SIGTERM or Ctrl-C
gives every open stream its final results before the server exits; a second one
stops at once."""


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from asr.serve.limits import StreamLimits, UploadLimits

    streams, uploads = StreamLimits(), UploadLimits()
    p = sub.add_parser(
        "serve",
        help="HTTP and WebSocket server: live transcription in the browser",
        description="Serve a checkpoint over HTTP and WebSocket: files by POST "
        "/transcribe, live audio by WS /stream with batch dispatch (all open "
        "streams through the model together), and a page at / that transcribes "
        "the microphone. Streaming needs a streaming checkpoint "
        "(unidirectional, global feature statistics); with another one only "
        "/transcribe works.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=int, default=8000, help="TCP port; 0 picks a free one (8000)"
    )
    auth = p.add_mutually_exclusive_group()
    auth.add_argument(
        "--token", help=f"the secret every request must carry (or ${TOKEN_ENV})"
    )
    auth.add_argument(
        "--no-auth",
        action="store_true",
        help="serve any client that can reach the address, without a token",
    )
    p.add_argument(
        "--max-streams",
        type=int,
        default=streams.max_streams,
        help=f"open WebSocket streams at once (default: {streams.max_streams})",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=streams.max_message_bytes,
        help="largest WebSocket message, in bytes "
        f"(default: {streams.max_message_bytes}: 4 s of 16 kHz PCM)",
    )
    p.add_argument(
        "--max-messages-per-second",
        type=float,
        default=streams.max_messages_per_second,
        help="a stream's sustained message rate "
        f"(default: {streams.max_messages_per_second:g}: 5 ms frames)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=streams.idle_timeout,
        help="seconds a stream may send nothing before it is closed "
        f"(default: {streams.idle_timeout:g})",
    )
    p.add_argument(
        "--endpoint-seconds",
        type=float,
        default=streams.endpoint_seconds,
        help="trailing non-speech that ends a segment and gives its final "
        f"(default: {streams.endpoint_seconds:g})",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=int,
        default=uploads.max_upload_bytes,
        help="largest POST /transcribe body, in bytes "
        f"(default: {uploads.max_upload_bytes})",
    )
    p.add_argument(
        "--max-upload-seconds",
        type=float,
        default=uploads.max_upload_seconds,
        help="longest POST /transcribe audio, in seconds "
        f"(default: {uploads.max_upload_seconds:g})",
    )
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="run the open streams through the model one by one instead of "
        "together (batch dispatch): the benchmark's reference",
    )
    p.add_argument("--lm", type=Path, help="KenLM model: beam search for finals")
    p.add_argument("--alpha", type=float, help="LM weight (beam search)")
    p.add_argument("--beta", type=float, help="word insertion bonus (beam search)")
    p.add_argument("--beam-width", type=int, help="beam width (beam search)")
    add_gate_options(p)
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op CPU threads of the model (default: 1, as asr transcribe)",
    )


class ServeError(ValueError):
    """A bad combination of options, said in one line."""


def _options(args: argparse.Namespace) -> ServeOptions:
    from asr.serve.app import ServeOptions
    from asr.serve.limits import StreamLimits, UploadLimits
    from asr.serve.server import is_loopback

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if args.no_auth:
        token = None
    elif token is not None and not token.strip():
        raise ServeError("the token is empty")
    if not is_loopback(args.host) and token is None and not args.no_auth:
        raise ServeError(
            f"{args.host} is reachable from other machines: give a --token (or "
            f"{TOKEN_ENV}), or --no-auth to serve anyone who can reach it"
        )
    if args.threads < 1:
        raise ServeError(f"--threads must be at least 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise ServeError(f"--port must be 0-65535, got {args.port}")
    try:
        streams = StreamLimits(
            max_streams=args.max_streams,
            max_message_bytes=args.max_message_bytes,
            idle_timeout=args.idle_timeout,
            max_messages_per_second=args.max_messages_per_second,
            endpoint_seconds=args.endpoint_seconds,
        )
        uploads = UploadLimits(args.max_upload_bytes, args.max_upload_seconds)
    except ValueError as err:
        raise ServeError(f"--{str(err).replace('_', '-')}") from None
    return ServeOptions(
        checkpoint=args.checkpoint,
        lm=args.lm,
        alpha=args.alpha,
        beta=args.beta,
        beam_width=args.beam_width,
        silence_db=silence_db(args),
        device=args.device,
        threads=args.threads,
        token=token,
        batch=not args.no_batch,
        streams=streams,
        uploads=uploads,
    )


def run_serve(args: argparse.Namespace) -> int:
    from asr.serve.app import Service
    from asr.serve.server import listen, run

    try:
        options = _options(args)
    except ServeError as err:
        print(f"asr serve: error: {err}", file=sys.stderr)
        return 1
    try:
        sock = listen(args.host, args.port)
    except OSError as err:
        reason = err.strerror or str(err)
        print(
            f"asr serve: error: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        return 1
    with sock:
        service = Service(options)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        streaming = (
            f"streaming {'with' if options.batch else 'without'} batch dispatch, "
            f"up to {args.max_streams} streams"
            if service.dispatcher is not None
            else f"no streaming ({service.streaming_error})"
        )
        auth = "token required" if options.token else "no token"
        print(
            f"asr serve: listening on http://{shown}:{port}/ ({auth}; {streaming})",
            file=sys.stderr,
            flush=True,
        )
        drained = run(service, sock)
    print(
        f"asr serve: stopped ({drained} open streams given their finals)",
        file=sys.stderr,
    )
    return 0
