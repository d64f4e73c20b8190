"""``asr serve``: one process serving a checkpoint over HTTP and WebSocket.

:mod:`asr.serve.app` holds the routes (the page, ``/health``, ``/transcribe``,
``/stream``) and the token and origin guard; :mod:`asr.serve.streams` the
WebSocket protocol and the batch dispatcher; :mod:`asr.serve.limits` the clients'
limits; :mod:`asr.serve.server` runs it all on uvicorn and drains the streams on
SIGTERM. The page's files are in ``static/``. docs/server.md describes the
protocol. Nothing is imported here, so that ``asr``'s other commands do not load
the web stack.
"""
