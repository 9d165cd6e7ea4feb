"""The studio's web server (Starlette + uvicorn, the ``studio`` extra): a JSON API over :class:`Session`, the
page and its audio, and nothing else.

Safe by default: it listens on 127.0.0.1 and answers only requests addressed to a loopback host name (no DNS
rebinding); on any other host every request must carry the token printed at start-up. Files are served only
from inside the stems folder and the output folder, after resolving links and ``..``. Uploads are capped in
size and decoded by the same checked reader as every command.
"""

from __future__ import annotations

import json
import secrets
import socket
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from gradmix.defaults import STUDIO_HOST, STUDIO_PORT
from gradmix.errors import GradmixError
from gradmix.studio.session import Session

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_UPLOAD_BYTES = 200 * 2**20
STATIC = {"studio.js": "text/javascript", "studio.css": "text/css"}


def create_app(
    session: Session,
    *,
    token: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: tuple[str, ...] = LOOPBACK,
):
    """The Starlette application for ``session``; ``token``: required on every request when set."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    static = resources.files("gradmix.studio") / "static"
    roots = {"stems": session.stems_dir, "out": session.out_dir}

    async def page(request: Request) -> Response:
        return HTMLResponse((static / "index.html").read_text())

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", 404)
        return Response((static / name).read_text(), media_type=STATIC[name])

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.state, True))

    async def audio(request: Request) -> Response:
        version = request.query_params.get("version", "")
        data, r = await run_in_threadpool(session.wav_bytes, version)
        return Response(
            data,
            media_type="audio/wav",
            headers={
                "X-Loudness-LUFS": f"{r.loudness_lufs:.2f}",
                "X-Peak-dBFS": f"{r.peak_dbfs:.2f}",
                "Cache-Control": "no-store",
            },
        )

    async def meters(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.meters, request.query_params.get("version", "")))

    async def done(result: Any) -> Response:
        return JSONResponse({"ok": True, "result": result, "state": await run_in_threadpool(session.state)})

    def action(fn):
        async def endpoint(request: Request) -> Response:
            return await done(await run_in_threadpool(fn, await _json(request)))

        return endpoint

    async def match(request: Request) -> Response:
        suffix = "".join(
            c for c in Path(request.headers.get("x-filename", "upload.wav")).suffix if c.isalnum() or c == "."
        )
        size = int(request.headers.get("content-length") or 0)
        if size > max_upload_bytes:
            return _error(f"the upload is {size / 2**20:.0f} MB; the limit is {max_upload_bytes / 2**20:.0f} MB", 413)
        with tempfile.TemporaryDirectory(prefix="gradmix-upload-") as tmp:
            path = Path(tmp) / f"reference{suffix[:8] or '.wav'}"
            received = 0
            with path.open("wb") as f:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > max_upload_bytes:
                        return _error(f"the upload is larger than the limit of {max_upload_bytes / 2**20:.0f} MB", 413)
                    f.write(chunk)
            if received == 0:
                return _error("the upload is empty: choose a reference audio file")
            name = await run_in_threadpool(session.match, path)
        return await done(name)

    async def files(request: Request) -> Response:
        root = roots.get(request.path_params["root"])
        rel = request.path_params["path"]
        if root is None or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
            return Response("not found", 404)
        try:
            target = (root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return Response("not found", 404)
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            return Response("not found", 404)
        return FileResponse(target)

    async def guard(scope, receive, send, app):
        if token is not None and scope["type"] == "http":
            req = Request(scope)
            given = req.headers.get("x-gradmix-token") or req.query_params.get("token")
            if not (given and secrets.compare_digest(given, token)):
                await JSONResponse({"error": "this studio needs the token printed at start-up"}, 403)(
                    scope, receive, send
                )
                return
        await app(scope, receive, send)

    routes = [
        Route("/", page),
        Route("/static/{name}", asset),
        Route("/api/state", state),
        Route("/api/audio", audio),
        Route("/api/meters", meters),
        Route("/api/edit", action(lambda b: session.edit(_field(b, "changes", list))), methods=["POST"]),
        Route("/api/undo", action(lambda b: session.undo()), methods=["POST"]),
        Route("/api/redo", action(lambda b: session.redo()), methods=["POST"]),
        Route(
            "/api/monitor",
            action(lambda b: session.monitor(_field(b, "muted", list), _field(b, "soloed", list))),
            methods=["POST"],
        ),
        Route(
            "/api/region",
            action(
                lambda b: session.set_region(
                    float(_field(b, "start", (int, float))), float(_field(b, "end", (int, float)))
                )
            ),
            methods=["POST"],
        ),
        Route("/api/adopt", action(lambda b: session.adopt(_field(b, "version", str))), methods=["POST"]),
        Route("/api/mix-again", action(lambda b: session.mix_again()), methods=["POST"]),
        Route("/api/sample", action(lambda b: session.sample()), methods=["POST"]),
        Route("/api/match", match, methods=["POST"]),
        Route(
            "/api/save",
            action(lambda b: [str(p) for p in session.save(str(b.get("name") or "studio_mix"))]),
            methods=["POST"],
        ),
        Route("/files/{root}/{path:path}", files),
    ]

    async def gradmix_error(request: Request, exc: Exception) -> Response:
        return _error(str(exc))

    app = Starlette(
        routes=routes,
        exception_handlers={GradmixError: gradmix_error},
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
    )

    async def guarded(scope, receive, send):
        await guard(scope, receive, send, app)

    return guarded


def _error(message: str, status: int = 400):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status)


async def _json(request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GradmixError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise GradmixError("the request body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GradmixError(f"the request needs {name!r}")
    return value


class Studio:
    """A running studio server: ``with Studio(session) as s: ... s.url`` (a background thread), or
    :meth:`serve_forever` in the foreground (Ctrl-C stops it cleanly).

    ``port`` 0 picks a free port. Any ``host`` other than a loopback address requires a token, made here
    and put in :attr:`url`.
    """

    def __init__(
        self,
        session: Session,
        *,
        host: str = STUDIO_HOST,
        port: int = STUDIO_PORT,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        import uvicorn

        self.token = None if host in LOOPBACK else secrets.token_urlsafe(18)
        allowed = LOOPBACK if self.token is None else ("*",)
        app = create_app(session, token=self.token, max_upload_bytes=max_upload_bytes, allowed_hosts=allowed)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host.strip("[]"), port))
            self.socket.listen(128)  # connections wait in the backlog until uvicorn accepts them
        except OSError as exc:
            self.socket.close()
            raise GradmixError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self.port = self.socket.getsockname()[1]
        name = f"[{host.strip('[]')}]" if ":" in host else host
        self.url = f"http://{name}:{self.port}/" + (f"?token={self.token}" if self.token else "")
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def __enter__(self) -> Studio:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
