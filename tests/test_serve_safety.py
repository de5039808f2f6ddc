"""cnnx serve under attack: other origins, hostile clients, malformed requests, long recomputes and signals."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from served import request

from cnnx.app import serve
from cnnx.app.serve import make_server
from cnnx.app.session import Session
from cnnx.app.shell import source_from
from cnnx.render.draw import Style


def _stripes(path: Path, height: int = 48, width: int = 64) -> Path:
    stripes = (np.arange(width) // 4 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.tile(stripes, (height, 1))).save(path)
    return path


class Served:
    """A server on a loopback port, in this process, and what a test needs of it."""

    def __init__(self, tmp_path: Path, image: Path, spec: str | None = None):
        self.session = Session(image, lambda text: source_from(text or spec, None, None, None, None, None), Style(),
                               folder=tmp_path / "session")
        self.session.recompute()
        self.server, self.url = make_server(self.session)
        self.port = self.server.server_address[1]
        self.token = self.url.partition("token=")[2]
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.close()

    def request(self, path, *, method="GET", body=None, headers=None):
        """A request as the page sends it: the cookie, and to /api/ the header and the origin."""
        return request(self.port, path, method=method, token=self.token, body=body, headers=headers)


@pytest.fixture
def served(tmp_path):
    running = Served(tmp_path, _stripes(tmp_path / "a.png"))
    yield running
    running.close()


def _strict(body: bytes):
    """The body as strict JSON: NaN or Infinity as bare numbers would fail here."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(body, parse_constant=refuse)


# ---------------------------------------------------------------- other origins


@pytest.mark.parametrize("case", ["cookie alone", "foreign origin", "same-site fetch", "cross-site", "no origin",
                                  "wrong header token"])
@pytest.mark.slow
def test_the_cookie_alone_never_authorises(served, case):
    """curl -b cnnx-token=T -H 'Origin: http://127.0.0.1:1' -d spec=relu, and its kin: 403, nothing changes."""
    headers = {
        "cookie alone": {"X-Cnnx-Token": "", "Origin": served.origin},
        "foreign origin": {"Origin": "http://127.0.0.1:1"},
        "same-site fetch": {"Origin": "", "Sec-Fetch-Site": "same-site"},
        "cross-site": {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        "no origin": {"Origin": ""},
        "wrong header token": {"X-Cnnx-Token": "guess"},
    }[case]
    before = served.session.count
    status, _, body = served.request("/api/spec", method="POST", body=b"spec=relu", headers={
        "Content-Type": "application/x-www-form-urlencoded", **{k: v for k, v in headers.items()}})
    if headers.get("Origin") == "":
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)  # no Origin header at all
        sent = {"Host": f"127.0.0.1:{served.port}", "Cookie": f"cnnx-token-{served.port}={served.token}",
                "X-Cnnx-Token": served.token, "Content-Type": "application/x-www-form-urlencoded",
                **({"Sec-Fetch-Site": headers["Sec-Fetch-Site"]} if "Sec-Fetch-Site" in headers else {})}
        connection.request("POST", "/api/spec", body=b"spec=relu", headers=sent)
        answer = connection.getresponse()
        status, body = answer.status, answer.read()
    assert status == 403 and _strict(body)["error"]
    assert served.session.count == before and served.session.spec == ""


@pytest.mark.slow
def test_run_files_carry_headers_that_keep_other_origins_out(served):
    """Every answer: CORP same-origin, no framing, no CORS; a file asked for by another site is refused."""
    for path in ("/", "/run/manifest.json", "/run/1/01_conv/montage.png", "/api/filters"):
        status, headers, _ = served.request(path)
        assert status == 200, path
        assert headers["Cross-Origin-Resource-Policy"] == "same-origin" and headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert not any(k.lower().startswith("access-control-") for k in headers)
    status, _, _ = served.request("/run/manifest.json", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403


ATTACK = """<!doctype html><html><body>
<form id="f" method="post" action="http://127.0.0.1:{port}/api/spec" target="sink">
<input name="spec" value="relu"></form><iframe name="sink" id="sink"></iframe>
<script>
window.results = {{}};
const target = "http://127.0.0.1:{port}";
const settle = (name, promise) => promise.then(r => r.status, e => "blocked: " + e.message)
  .then(v => {{ window.results[name] = String(v); }});
settle("read manifest", fetch(target + "/run/manifest.json", {{credentials: "include"}}).then(r => r.text()));
settle("post spec", fetch(target + "/api/spec", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{spec: "relu"}})}}).then(() => "sent"));
settle("post with token header", fetch(target + "/api/spec", {{method: "POST", credentials: "include",
  headers: {{"X-Cnnx-Token": "guess", "Content-Type": "application/json"}}, body: "{{}}"}}));
const picture = new Image();
picture.onload = () => {{ window.results["image"] = "loaded"; }};
picture.onerror = () => {{ window.results["image"] = "blocked"; }};
picture.src = target + "/run/1/01_conv/montage.png";
document.getElementById("f").submit();
setTimeout(() => {{ window.results["done"] = "yes"; }}, 2500);
</script></body></html>"""


@pytest.mark.slow
def test_a_page_of_another_origin_cannot_drive_or_read_the_server(served, browser):
    """In Chromium, logged in to cnnx serve, a page served on another local port posts a form, fetches a run and
    embeds its picture: the server changes nothing and the page reads nothing."""
    page = ATTACK.format(port=served.port).encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        browser.get(served.url)  # the user opens the printed URL: the cookie is set
        assert "cnnx-live" in browser.page_source
        before = served.session.count
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and browser.execute_script("return window.results.done") != "yes":
            time.sleep(0.2)
        results = browser.execute_script("return window.results")
    finally:
        other.shutdown()
        other.server_close()
    assert results["done"] == "yes"
    assert results["read manifest"].startswith("blocked") and results["image"] == "blocked", results
    assert results["post with token header"].startswith("blocked"), results
    assert served.session.count == before and served.session.spec == "", results


@pytest.mark.slow
def test_two_servers_in_one_browser_both_keep_working(tmp_path, browser):
    """Opening a second server's URL does not log the browser out of the first: each has its own cookie."""
    first = Served(tmp_path / "one", _stripes(tmp_path / "a.png"))
    second = Served(tmp_path / "two", _stripes(tmp_path / "b.png", 32, 40))
    try:
        browser.get(first.url)
        browser.get(second.url)
        for running in (first, second):
            browser.get(f"{running.origin}/")
            assert "cnnx-live" in browser.page_source
            status = browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "api('/api/value?stage=1&channel=0&row=2&col=3').then(r => done(r.status));")
            assert status == 200
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------- hostile clients


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def served_process(tmp_path):
    """``cnnx serve`` as a user starts it: its process, port and token."""
    image = _stripes(tmp_path / "a.png")
    process = subprocess.Popen([sys.executable, "-m", "cnnx", "serve", str(image), "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    line = process.stdout.readline()
    url = line.split("open ")[1].split()[0]
    port = int(url.split(":")[2].split("/")[0])
    yield process, port, url.partition("token=")[2]
    if process.poll() is None:
        process.terminate()
        process.communicate(timeout=30)
    assert not list(tmp_path.glob("cnnx-serve-*"))


@pytest.mark.slow
def test_unfinished_huge_headers_cost_little_and_are_closed(served_process):
    """30 clients each sending 6 MB of one header line and never finishing: the server reads a few KB of each,
    answers 431 and closes; its memory grows by a few MB, not 175."""
    process, port, _ = served_process
    time.sleep(0.5)
    before = _rss(process.pid)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    chunk = b"a" * (1 << 16)

    def send(client):
        client.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ".encode())
        try:
            for _ in range(96):  # 6 MB
                client.sendall(chunk)
        except OSError:
            pass  # the server closed the connection: as it should

    with ThreadPoolExecutor(30) as pool:
        list(pool.map(send, clients))
    peak = _rss(process.pid)
    answers = []
    for client in clients:
        client.settimeout(10)
        try:
            answers.append(client.recv(200))
        except OSError:
            answers.append(b"")
        client.close()
    assert peak - before < 16 << 20, (before, peak)
    assert all(a == b"" or a.startswith(b"HTTP/1.0 431") for a in answers), answers[:3]
    assert process.poll() is None


@pytest.mark.slow
def test_a_slow_head_is_closed_and_connections_are_counted(served, monkeypatch):
    """A client that sends its head slowly is cut off; connections beyond the limit get a 503 at once."""
    monkeypatch.setattr(serve, "HEAD_SECONDS", 0.5)
    monkeypatch.setattr(serve._Handler, "timeout", 0.5)
    slow = socket.create_connection(("127.0.0.1", served.port))
    slow.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.3)
    slow.sendall(b"Host: 127.0.0.1\r\n")
    time.sleep(0.8)
    slow.settimeout(5)
    try:
        slow.sendall(b"X-More: 1\r\n")
        assert slow.recv(100) in (b"",) or True
    except OSError:
        pass
    slow.settimeout(5)
    assert slow.recv(100) == b""  # closed without an answer to a half-sent head
    slow.close()
    monkeypatch.setattr(serve, "CONNECTIONS", 2)
    served.server.slots = threading.BoundedSemaphore(2)
    held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(2)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", served.port))
    extra.settimeout(5)
    assert extra.recv(100).startswith(b"HTTP/1.0 503")
    for client in [*held, extra]:
        client.close()


@pytest.mark.slow
def test_forty_eight_simultaneous_uploads_all_get_an_answer(served, tmp_path):
    """48 uploads at once: every one is answered (the newest runs, the others are replaced or run), none dropped."""
    picture = _stripes(tmp_path / "u.png", 40, 56).read_bytes()

    def upload(k):
        return served.request("/api/image", method="POST", body=picture, headers={"X-File-Name": f"u{k}.png"})[0]

    with ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(upload, range(48)))
    assert all(status in (200, 409) for status in statuses) and 200 in statuses, statuses
    assert served.request("/")[0] == 200


@pytest.mark.slow
def test_a_long_recompute_never_freezes_the_page_and_a_newer_one_replaces_it(tmp_path):
    """While a slow recompute runs, the page and its files are answered; a newer edit makes the older give up
    between stages (409) and its own run is what the page shows."""
    image = _stripes(tmp_path / "big.png", 1500, 1500)
    running = Served(tmp_path, image, spec="conv(sobel_x) -> relu")
    try:
        slow = "conv(random:32) -> relu -> conv(random:32) -> relu -> conv(random:32) -> relu"
        results = {}

        def edit(name, spec):
            results[name] = running.request("/api/spec", method="POST", body=json.dumps({"spec": spec}).encode(),
                                            headers={"Content-Type": "application/json"})[0]

        first = threading.Thread(target=edit, args=("slow", slow))
        first.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert running.request("/")[0] == 200 and running.request("/run/manifest.json")[0] == 200
        assert time.monotonic() - started < 1.0
        edit("newer", "conv(sobel_y) -> relu")
        first.join(60)
        assert results == {"slow": 409, "newer": 200}, results
        manifest = json.loads(running.request("/run/manifest.json")[2])
        assert manifest["stages"][1]["description"].startswith("conv(sobel_y")
    finally:
        running.close()


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_during_a_recompute_exits_within_two_seconds(tmp_path, signum, code):
    """SIGTERM, Ctrl-C or SIGHUP while a long recompute runs: out within 2 s, its code, no traceback, no runs left."""
    image = _stripes(tmp_path / "big.png", 2500, 2500)
    process = subprocess.Popen([sys.executable, "-m", "cnnx", "serve", str(image), "--no-browser", "-s", "relu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    url = process.stdout.readline().split("open ")[1].split()[0]
    port, token = int(url.split(":")[2].split("/")[0]), url.partition("token=")[2]
    slow = "conv(random:32) -> relu -> conv(random:32) -> relu -> conv(random:32)"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/spec", body=json.dumps({"spec": slow}).encode(), headers={
        "Host": f"127.0.0.1:{port}", "Cookie": f"cnnx-token-{port}={token}", "X-Cnnx-Token": token,
        "Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"})
    time.sleep(0.5)
    process.send_signal(signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    connection.close()
    assert elapsed < 2.0
    assert process.returncode == code and "Traceback" not in stderr, stderr
    assert not list(tmp_path.glob("cnnx-serve-*"))


# ---------------------------------------------------------------- malformed requests


MALFORMED = {
    "a list for the style": ("POST", "/api/style", b"[1, 2]", {}),
    "a number for the sample": ("POST", "/api/sample", b"3", {}),
    "a string for a filter": ("POST", "/api/filter", b'"x"', {}),
    "a stage past float's end": ("POST", "/api/filter", b'{"stage": 1e400, "index": 0, "weights": [[1]]}', {}),
    "a stage that is true": ("POST", "/api/filter", b'{"stage": true, "index": 0, "weights": [[1]]}', {}),
    "weights nested too deep": ("POST", "/api/filter", b'{"stage": 1, "index": 0, "weights": [[[1]]]}', {}),
    "weights of words": ("POST", "/api/filter", b'{"stage": 1, "index": 0, "weights": [[1, "a"]]}', {}),
    "weights ragged": ("POST", "/api/filter", b'{"stage": 1, "index": 0, "weights": [[1, 2], [3]]}', {}),
    "NaN in the JSON": ("POST", "/api/filter", b'{"stage": 1, "index": 0, "weights": [[NaN]]}', {}),
    "JSON nested ten thousand deep": ("POST", "/api/style", b"[" * 10000 + b"]" * 10000, {}),
    "not UTF-8": ("POST", "/api/style", b"\xff\xfe{}", {}),
    "a style of numbers": ("POST", "/api/style", b'{"cmap": 5}', {}),
    "a spec of a list": ("POST", "/api/spec", b'{"spec": ["relu"]}', {}),
    "a query past float's end": ("GET", "/api/value?stage=1e400&channel=0&row=0&col=0", None, {}),
    "a query in Arabic digits": ("GET", "/api/value?stage=%D9%A3&channel=0&row=0&col=0", None, {}),
    "a query of huge numbers": ("GET", "/api/value?stage=99999999999999999999&channel=0&row=0&col=0", None, {}),
    "a query missing a place": ("GET", "/api/explain?stage=1", None, {}),
    "a run named in words": ("GET", "/api/download?run=last", None, {}),
    "a negative length": ("POST", "/api/spec", b"", {"Content-Length": "-1"}),
    "a length in words": ("POST", "/api/spec", b"", {"Content-Length": "ten"}),
    "an upload of 300 characters": ("POST", "/api/image", b"not an image", {"X-File-Name": "a" * 300 + ".png"}),
    "an upload name of a path": ("POST", "/api/image", b"not an image", {"X-File-Name": "../../etc/passwd"}),
    "an unknown method": ("DELETE", "/api/spec", None, {}),
    "a preflight": ("OPTIONS", "/api/spec", None, {"Origin": "http://127.0.0.1:1"}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.slow
def test_every_malformed_request_gets_a_json_4xx_without_server_paths(served, case):
    """Bodies of the wrong JSON type, numbers out of range, wrong nesting, odd lengths and names: a JSON error with
    a 4xx status, no server path, and the server goes on."""
    method, path, body, headers = MALFORMED[case]
    status, _, content = served.request(path, method=method, body=body, headers=headers)
    assert 400 <= status < 500, (status, content)
    assert _strict(content)["error"]
    assert str(served.session.folder) not in content.decode() and "/tmp" not in content.decode()
    assert served.request("/")[0] == 200


@pytest.mark.parametrize("line", [b"GET /?token=%C3%A9 HTTP/1.1", b"GET /?token=\xc3\xa9 HTTP/1.1",
                                  b"GET /" + b"a" * 20000 + b" HTTP/1.1", b"NONSENSE", b"GET / HTTP/9.9"])
@pytest.mark.slow
def test_odd_request_lines_get_json_errors(served, line):
    """A non-ASCII token in the query, a request line too long or malformed: a JSON 4xx, never a dropped
    connection or a traceback."""
    client = socket.create_connection(("127.0.0.1", served.port))
    client.sendall(line + f"\r\nHost: 127.0.0.1:{served.port}\r\n\r\n".encode())
    client.settimeout(10)
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    client.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500 and _strict(body)["error"], answer[:300]


@pytest.mark.slow
def test_too_many_headers_get_a_json_431(served):
    client = socket.create_connection(("127.0.0.1", served.port))
    client.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (k, b"v" * 500) for k in range(200)) + b"\r\n")
    client.settimeout(10)
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    client.close()
    assert answer.startswith(b"HTTP/1.0 431") and b'"error"' in answer


@pytest.mark.slow
def test_values_that_are_not_finite_are_sent_as_valid_json(tmp_path):
    """A map holding infinities: /api/value and /api/explain answer strict JSON, the value as "Infinity"."""
    running = Served(tmp_path, _stripes(tmp_path / "a.png"), spec="conv([[3e38,3e38],[3e38,3e38]])")
    try:
        raw = np.load(running.session.run / "01_conv" / "stage.npy")
        row, col = map(int, np.argwhere(np.isinf(raw[0]))[0])
        for path in ("/api/value", "/api/explain"):
            status, _, body = running.request(f"{path}?stage=1&channel=0&row={row}&col={col}")
            assert status == 200
            data = _strict(body)
            assert data.get("value", data.get("total")) == "Infinity", data
    finally:
        running.close()
