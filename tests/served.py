"""Requests to a cnnx server as its page makes them, for the serve tests."""

import http.client


def request(port, path, *, method="GET", token=None, host=None, body=None, headers=None):
    """One request as the page makes it: the token as the cookie the printed URL sets and, to /api/, in the header
    the page adds, from the server's own origin."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = {"Host": host or f"127.0.0.1:{port}"}
    if token:
        sent["Cookie"] = f"cnnx-token-{port}={token}"
        if path.startswith("/api/"):
            sent.update({"X-Cnnx-Token": token, "Origin": f"http://127.0.0.1:{port}"})
    sent.update(headers or {})
    connection.request(method, path, body=body, headers=sent)
    answer = connection.getresponse()
    content = answer.read()
    connection.close()
    return answer.status, dict(answer.getheaders()), content
