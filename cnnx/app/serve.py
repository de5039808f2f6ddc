"""``cnnx serve``: the run's page, live, on a local web server: edit the stages or drop an image and it recomputes.

The server answers the page's requests from a ``session.Session``; pages and
files are answered while a recompute runs.  The page's HTML and JavaScript
are files in ``static/``.

What the server promises, and how (the README's "Safety" says it to users):

- It listens on 127.0.0.1 by default and answers only requests that name the
  address it printed (no DNS rebinding).
- The printed URL's token sets a cookie named for the port (two servers in one
  browser keep theirs).  The cookie alone never authorises: every request to
  ``/api/`` must carry the token in the ``X-Cnnx-Token`` header, which the
  page adds from the value written into it and a page of another origin can
  neither read nor send, and must come from the server's own origin
  (``Origin`` or ``Sec-Fetch-Site``).  A request another site makes is refused.
- Every answer says ``Cross-Origin-Resource-Policy: same-origin`` and may not
  be framed; none allows another origin to read it (no CORS).
- A request's head is at most ``HEAD_LIMIT`` bytes, sent within
  ``HEAD_SECONDS``; at most ``CONNECTIONS`` connections are served at once.
- Every bad request is a JSON error with a 4xx status; no error shows a file
  path of the server's, and numbers that are not finite are sent as strings.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import http.client
import json
import math
import re
import secrets
import socket
import string
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np

from cnnx.app.session import Session, shipped_samples
from cnnx.base.errors import Cancelled, CnnxError, message

__all__ = ["Session", "make_server"]

BODY_LIMIT = 64 << 20  # bytes a request may send: an uploaded photo
HEAD_LIMIT = 32 << 10  # bytes of a request's line and headers together
HEAD_SECONDS = 10.0  # time a client has to send a request's head, and to send each part of its body
CONNECTIONS = 64  # connections served at once; more are answered 503 and closed
TOKEN_HEADER = "X-Cnnx-Token"
DRAIN_LIMIT = 256 << 10  # bytes of a refused request read after the answer, so it is not lost to a reset


def _style_choices(style) -> str:
    """Selects for how maps are drawn, the style's own choices selected."""
    from cnnx.base.choices import NORMALIZE, SCOPES, STRETCHES
    from cnnx.render.draw import CMAP_ALIASES

    def select(name: str, options, chosen: str) -> str:
        listed = [*options] + ([chosen] if chosen not in options else [])
        items = "".join(f"<option{' selected' if o == chosen else ''}>{html.escape(o)}</option>" for o in listed)
        return f'<label style="white-space:nowrap">{name} <select name="{name}">{items}</select></label>'

    ranged = [n for n in NORMALIZE if n != "fixed" or style.fixed]  # fixed needs a --range
    chosen = [
        select("normalize", ranged, style.normalize),
        select("scope", SCOPES, style.scope),
        select("cmap", list(CMAP_ALIASES), style.cmap),
        select("stretch", STRETCHES, style.stretch),
    ]
    return " ".join(chosen)


def _whole(value, name: str, low: int = 0, high: int = 1 << 31) -> int:
    """A whole number a request sent (JSON or a query's text), between ``low`` and ``high``."""
    if isinstance(value, str) and value.isascii() and re.fullmatch(r"-?\d{1,12}", value.strip()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise CnnxError(f"{name} must be a whole number from {low}; got {str(value)[:40]!r}")
    return value


def _json_object(body: bytes) -> dict:
    """A request's body as a JSON object (NaN and infinities refused)."""
    def refuse(constant: str):
        raise CnnxError(f"the request's JSON holds {constant}; numbers must be finite")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CnnxError("the request's body is not JSON") from None
    if not isinstance(data, dict):
        raise CnnxError(f"the request's body must be a JSON object, not {type(data).__name__}")
    return data


def _finite(value):
    """``value`` with every NaN or infinite number as the string JavaScript's Number() reads back: strict JSON."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        return value if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, np.integer):
        return int(value)
    return value


def _public(text: str) -> str:
    """An error for the page: file paths of the server's shortened to their last part."""
    return re.sub(r"(?<![\w.~-])(?:/[^/\s'\":]+)+/([^/\s'\":]+)", r"\1", text)


def _page_asset(name: str) -> str:
    return resources.files("cnnx.app").joinpath("static", name).read_text(encoding="utf-8")


class _Head:
    """A connection's reader whose lines (the request line and headers) may take ``HEAD_LIMIT`` bytes in all and
    must come within ``HEAD_SECONDS``; reads of a body pass through."""

    def __init__(self, stream):
        self.stream, self.left = stream, HEAD_LIMIT
        self.deadline = time.monotonic() + HEAD_SECONDS

    def readline(self, limit: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the request's head took too long")
        wanted = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        line = self.stream.readline(wanted)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong("request head")
        return line

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


class _Handler(BaseHTTPRequestHandler):
    """One request: checked for its Host, token and origin, answered from the session, never with a traceback."""

    server_version = "cnnx"
    timeout = HEAD_SECONDS  # the longest wait for any part of a request
    session: Session
    token: str
    port: int
    hosts: set[str]

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # a quiet server: the terminal shows the URL and errors only

    def setup(self) -> None:
        super().setup()
        self.rfile = _Head(self.rfile)

    def handle_one_request(self) -> None:
        """The base class's, with the head bounded in bytes and time, and a broken or slow client just closed."""
        try:
            self.raw_requestline = self.rfile.readline(8 << 10)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.raw_requestline.endswith(b"\n"):
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if self.parse_request():
                handler = getattr(self, f"do_{self.command}", None)
                if handler is None:
                    self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
                else:
                    handler()
            self.wfile.flush()
        except http.client.LineTooLong:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (a bad request line, headers too large) as JSON, like every other error."""
        self.close_connection = True
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # a request line naming no HTTP this server speaks: malformed
            code = HTTPStatus.BAD_REQUEST
        self.request_version = "HTTP/1.0"  # a status line and headers even for a line too broken to name its version
        with contextlib.suppress(OSError):
            self._error(code, message or HTTPStatus(code).phrase)
            self.wfile.flush()
            self._drain()

    def _drain(self) -> None:
        """Read (and drop) a little of what the client is still sending before closing, so that the answer is not
        lost to a reset; a bounded amount, in a bounded time."""
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(0.5)
        left = DRAIN_LIMIT
        while left > 0 and (chunk := self.connection.recv(min(left, 1 << 16))):
            left -= len(chunk)

    def _reply(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # No other origin may embed, frame or read what this server answers.
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; "
                         "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._reply(status, json.dumps(_finite(data), allow_nan=False).encode(), "application/json")

    def _error(self, status: int, text: str) -> None:
        self._json(status, {"error": _public(text)})

    @property
    def _cookie(self) -> str:
        return f"cnnx-token-{self.port}"

    def _allowed(self) -> bool:
        """The Host the server printed; its token in the cookie (set by the printed URL); for /api/, the token in
        the header too; and nothing sent by a page of another origin."""
        if self.headers.get("Host", "") not in self.hosts:
            self._error(HTTPStatus.FORBIDDEN, "this server answers only at the address it printed")
            return False
        url = urlsplit(self.path)
        given = parse_qs(url.query).get("token", [""])[0]
        if url.path == "/" and given and self._same_token(given):
            cookie = f"{self._cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            self._reply(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return False
        cookies = self.headers.get("Cookie", "")
        held = [part.strip().partition("=")[2] for part in cookies.split(";")
                if part.strip().partition("=")[0] == self._cookie]
        if not any(self._same_token(value) for value in held):
            self._error(HTTPStatus.FORBIDDEN, "open the URL cnnx printed, with its token")
            return False
        if not self._from_this_origin(api=url.path.startswith("/api/")):
            self._error(HTTPStatus.FORBIDDEN, "requests from another page or site are refused")
            return False
        if url.path.startswith("/api/") and not self._same_token(self.headers.get(TOKEN_HEADER, "")):
            self._error(HTTPStatus.FORBIDDEN, f"a request to /api/ carries the page's token in {TOKEN_HEADER}")
            return False
        return True

    def _same_token(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def _from_this_origin(self, *, api: bool) -> bool:
        """No other origin sent it; an /api/ request says it came from this one (Origin or Sec-Fetch-Site)."""
        origin, site = self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site")
        ours = origin is not None and origin in {f"http://{host}" for host in self.hosts}
        if origin is not None and not ours:
            return False
        if site is not None and site not in ("same-origin", "none"):
            return False
        return not api or ours or site == "same-origin"

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        self._guarded(self._get)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _guarded(self, answer) -> None:
        try:
            if self._allowed():
                answer()
        except Cancelled as error:
            self._error(HTTPStatus.CONFLICT, str(error))
        except CnnxError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError) as error:
            self._error(HTTPStatus.BAD_REQUEST, f"malformed request ({type(error).__name__})")
        except OSError as error:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, message(error))
        except Exception as error:  # a bug; the page gets JSON and the terminal one line, never a traceback
            print(f"cnnx: serve: {self.command} {urlsplit(self.path).path} failed ({type(error).__name__})",
                  file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "the server failed on this request")

    def _query(self, *names: str) -> dict[str, int]:
        """The whole numbers a query names; each of ``names`` must be there."""
        query = {key: values[0] for key, values in parse_qs(urlsplit(self.path).query).items()}
        missing = [name for name in names if name not in query]
        if missing:
            raise CnnxError(f"the query needs {', '.join(missing)}")
        return {name: _whole(query[name], name) for name in (*names, "run") if name in query}

    def _get(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/":
            self._page()
        elif path == "/static/live.js":
            self._reply(HTTPStatus.OK, _page_asset("live.js").encode(), "text/javascript; charset=utf-8")
        elif path.startswith("/run/"):
            self._file(path[len("/run/") :])
        elif path == "/api/download":
            name, body = self.session.archive(self._query().get("run"))
            self._reply(HTTPStatus.OK, body, "application/zip",
                        {"Content-Disposition": f'attachment; filename="{quote(name)}"'})
        elif path == "/api/filters":
            self._json(HTTPStatus.OK, self.session.filters())
        elif path in ("/api/value", "/api/explain"):
            query = self._query("stage", "channel", "row", "col")
            answer = self.session.value if path == "/api/value" else self.session.explain
            self._json(HTTPStatus.OK, answer(query["stage"], query["channel"], query["row"], query["col"],
                                             query.get("run")))
        elif path == "/api/looks-for":
            query = self._query("stage", "channel")
            self._json(HTTPStatus.OK, self.session.looks_for(query["stage"], query["channel"], query.get("run")))
        elif path == "/api/why":
            self._json(HTTPStatus.OK, self._why())
        elif path == "/api/lesson":
            self._json(HTTPStatus.OK, self.session.lesson(self._query().get("run")))
        elif path == "/favicon.ico":
            self._reply(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._error(HTTPStatus.NOT_FOUND, "no such page")

    def _why(self) -> dict:
        """``/api/why?method=M`` for the run's answer (``&class=NAME``), or with stage, channel, row and col for a
        value."""
        from cnnx.explain.why import METHODS

        query = {key: values[0] for key, values in parse_qs(urlsplit(self.path).query).items()}
        method = query.get("method") or None
        if method is not None and method not in METHODS:
            raise CnnxError(f"method takes {', '.join(METHODS)}")
        label = query.get("class", "")[:200] or None
        numbers = self._query()
        place = None
        if "stage" in query:
            numbers = self._query("stage", "channel", "row", "col")
            place = (numbers["stage"], numbers["channel"], numbers["row"], numbers["col"])
        return self.session.why(method, place, label, numbers.get("run"))

    def _page(self) -> None:
        session = self.session
        shown = session.shown()
        page = (shown.folder / "index.html").read_text()
        record = json.loads((shown.folder / "manifest.json").read_text())
        with session.lock:
            spec, error, style = session.spec, session.error, session.style
        config = json.dumps({"run": shown.number, "token": self.token}).replace("<", "\\u003c")
        toolbar = string.Template(_page_asset("toolbar.html")).substitute(
            config=config, spec=html.escape(spec or record.get("pipeline", {}).get("spec", "")),
            error=html.escape(_public(error)), style=_style_choices(style),
            samples="".join(f"<option>{html.escape(name)}</option>" for name in shipped_samples()),
        )
        base = f'<head>\n<base href="/run/{shown.number}/">'
        page = page.replace("<head>", base, 1).replace("<body>", "<body>\n" + toolbar, 1)
        self._reply(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def _file(self, relative: str) -> None:
        """A file of a run (``N/file`` of run N, ``file`` of the newest), and nothing outside it: the path is
        resolved and must stay inside."""
        number, _, rest = relative.partition("/")
        if number.isascii() and number.isdigit() and rest:
            try:
                run = self.session.shown(int(number)).folder.resolve()
            except CnnxError as error:
                self._error(HTTPStatus.NOT_FOUND, str(error))
                return
            relative = rest
        else:
            run = self.session.shown().folder.resolve()
        target = (run / relative).resolve()
        if run not in target.parents or not target.is_file():
            self._error(HTTPStatus.NOT_FOUND, "no such file in this run")
            return
        kind = {".png": "image/png", ".json": "application/json", ".html": "text/html; charset=utf-8"}.get(
            target.suffix, "application/octet-stream"
        )
        self._reply(HTTPStatus.OK, target.read_bytes(), kind)

    def _body(self) -> bytes | None:
        """The request's body; None, answered with 413, when it is over the limit (it is then not read)."""
        length = _whole(self.headers.get("Content-Length", "0"), "Content-Length", 0, 1 << 62)
        if length > BODY_LIMIT:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {BODY_LIMIT >> 20} MiB a request")
            self.close_connection = True
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            raise CnnxError("the request's body ended early")
        return body

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/api/spec", "/api/image", "/api/sample", "/api/filter", "/api/style", "/api/frame"):
            self._error(HTTPStatus.NOT_FOUND, "no such action")
            return
        body = self._body()
        if body is None:
            return
        if path == "/api/frame":
            self._json(HTTPStatus.OK, self.session.frame(body))
            return
        if path == "/api/image":
            self.session.upload(body, unquote(self.headers.get("X-File-Name", ""))[:255])
            self._json(HTTPStatus.OK, {})
            return
        form = self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        if path == "/api/spec" and form:  # as a form would send it (scripts): the page comes back
            asked = {"spec": parse_qs(body.decode("utf-8"), strict_parsing=bool(body)).get("spec", [""])[0]}
            self.session.recompute(spec=asked["spec"] or None)
            self._reply(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/"})
            return
        asked = _json_object(body)
        if path == "/api/spec":
            spec = asked.get("spec", "")
            if not isinstance(spec, str):
                raise CnnxError("spec is the stages as text")
            self.session.recompute(spec=spec or None)
            self.session.raise_error()
        elif path == "/api/style":
            self.session.set_style(asked)
        elif path == "/api/sample":
            self.session.show_sample(str(asked.get("name", "")))
        else:
            self.session.set_filter(_whole(asked.get("stage"), "stage"), _whole(asked.get("index"), "index"),
                                    asked.get("weights"))
        self._json(HTTPStatus.OK, {})


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``CONNECTIONS`` at once, a backlog that holds a burst, and quiet."""

    daemon_threads = True
    block_on_close = False  # closing never waits for a connection's thread (a recompute may be under way in one)
    request_queue_size = 128

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Too many connections: a short 503 and the connection closed, without a thread."""
        body = b'{"error": "too many connections at once; try again"}'
        try:
            request.settimeout(0.5)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-request is no news; the handler answers every error it can


def make_server(session: Session, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server for ``session`` and the URL (with its token) to open; port 0 takes a free one."""
    token = secrets.token_urlsafe(24)
    server = _Server((host, port), _Handler)
    bound = server.server_address[1]
    hosts = {f"{host}:{bound}", f"localhost:{bound}"} if host in ("127.0.0.1", "localhost") else {f"{host}:{bound}"}
    server.RequestHandlerClass = type("Handler", (_Handler,), {"session": session, "token": token, "hosts": hosts,
                                                                "port": bound})
    return server, f"http://{host}:{bound}/?token={token}"
