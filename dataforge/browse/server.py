"""The sample browser's web app: one static page (``static/``) and the JSON it asks for.

FastAPI (already a dependency, for Prefect) over a :class:`~dataforge.browse.queries.SampleIndex`;
``dataforge browse`` serves it with uvicorn on 127.0.0.1. Routes:

| route | what |
|---|---|
| ``GET /`` | the page (``static/index.html``; its script and style under ``/static/``) |
| ``GET /api/info`` | the run, its counts, score columns and their ranges, the other runs, the user |
| ``GET /api/samples?<filters>&offset=&limit=`` | one page of the list and the number of matches |
| ``GET /api/facets?<filters>`` | counts per facet value, a histogram per score |
| ``GET /api/sample/{id}`` | a sample's whole story |
| ``POST /api/label`` | ``{"id": ..., "label": "good" | "bad" | "clear"}``: appends a label file |
| ``GET /api/compare?other=RUN`` | funnels and drop reasons of the two runs |

Errors are JSON ``{"error": message}`` with 400 (a bad filter) or 404 (no such sample or run).
The label route takes JSON only (a form post from another site cannot send it without a CORS
preflight, which is never granted) and refuses a request whose ``Host`` is not this loopback
server (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from dataforge.browse.queries import (
    BrowseError,
    Filters,
    SampleIndex,
    SampleNotFound,
    jsonable,
)

STATIC = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _filters(request: Request, index: SampleIndex) -> Filters:
    return Filters.from_params(parse_qs(request.url.query, keep_blank_values=False), list(index.scores))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(index: SampleIndex) -> FastAPI:
    """The app over ``index`` (which it does not close)."""
    app = FastAPI(title=f"dataforge browse {index.run.run_id}", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SampleNotFound)
    async def not_found(_request: Request, exc: SampleNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(BrowseError)
    async def bad_request(_request: Request, exc: BrowseError) -> JSONResponse:
        return _error(400, str(exc))

    @app.middleware("http")
    async def loopback_only(request: Request, call_next):
        header = request.headers.get("host") or ""
        host = header[:header.index("]") + 1] if header.startswith("[") and "]" in header else header.rsplit(":", 1)[0]
        if host and host not in LOCAL_HOSTS:
            return _error(403, f"this server answers on 127.0.0.1 only, not {host!r}")
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict:
        return jsonable(index.info())

    @app.get("/api/samples")
    def samples(request: Request, offset: int = 0, limit: int = 50) -> dict:
        return index.page(_filters(request, index), offset, limit)

    @app.get("/api/facets")
    def facets(request: Request) -> dict:
        return index.facets(_filters(request, index))

    @app.get("/api/sample/{sample_id}")
    def sample(sample_id: str) -> dict:
        return index.sample(sample_id)

    @app.post("/api/label")
    async def label(request: Request) -> JSONResponse:
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return _error(415, "send the label as JSON: {\"id\": ..., \"label\": \"good\" | \"bad\" | \"clear\"}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("label"), str):
            return _error(400, "send {\"id\": <sample id>, \"label\": \"good\" | \"bad\" | \"clear\"}")
        return JSONResponse(await run_in_threadpool(index.label, body["id"], body["label"]))

    @app.get("/api/compare")
    def compare(other: str) -> dict:
        return index.compare(other)

    return app


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: a free port); OSError when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: a response is not held back waiting for the client's
        # delayed ACK of its headers (40 ms a request on Linux otherwise)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


@contextlib.contextmanager
def running(app: FastAPI, port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a background thread for the block; yields its base URL
    (``http://127.0.0.1:<port>``). For the benchmark, the screenshot script and tests."""
    import uvicorn

    sock = bind(port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the browse server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
