"""`workers.http_post.exchange` (the POST that reads the answer's body: calls to n8n)
against real HTTP/1.1 servers started here.

Proven here:
* it returns the status and the body of the answer, and keeps the connection alive;
* a body longer than `max_body` is cut there and that connection is not kept (the next
  call opens a new one), with a `Content-Length` body and with a chunked one; a body of
  exactly `max_body` is whole and its connection kept;
* a kept-alive connection takes the timeout of each call: a call with a short timeout to
  a slow answer times out on a connection opened with a long one, and a call with a long
  timeout waits for a slow answer on a connection opened with a short one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from flowledger.settings import Settings
from workers import broker

broker.setup(Settings())  # the in-process broker, before any actor module is imported

from workers import http_post  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


class Server:
    """A real HTTP/1.1 keep-alive server. `POST /answer?size=N[&chunked=1][&wait=S]`
    answers 200 with N bytes (`Content-Length`, or chunked in pieces of 1000), after
    waiting S seconds (cut short when the server stops). It records which connection
    (numbered from 1 in the order they were accepted) carried each request."""

    def __init__(self) -> None:
        self.connections = 0
        self.served: list[tuple[int, str]] = []  # (connection number, path and query)
        self.stopping = threading.Event()
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with lock:
                    owner.connections += 1
                    self.number = owner.connections
                super().setup()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.served.append((self.number, self.path))
                query = parse_qs(urlsplit(self.path).query)
                size = int(query.get("size", ["2"])[0])
                wait = float(query.get("wait", ["0"])[0])
                if wait:
                    owner.stopping.wait(wait)
                body = bytes(ord("a") + n % 26 for n in range(size))
                self.send_response(200)
                if "chunked" in query:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, size, 1000):
                        piece = body[start : start + 1000]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def url(self, **query: object) -> str:
        return f"{self.base}/answer?" + "&".join(f"{k}={v}" for k, v in query.items())

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    one = Server()
    yield one
    http_post.close_all()
    one.stop()


def letters(size: int) -> bytes:
    return bytes(ord("a") + n % 26 for n in range(size))


def test_returns_the_status_and_the_body_and_keeps_the_connection(server: Server) -> None:
    for size in (0, 5, 3000):
        assert http_post.exchange(server.url(size=size), b"{}", HEADERS, 5.0, 65_536) == (
            200,
            letters(size),
        )
    assert server.connections == 1 and len(server.served) == 3


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_longer_than_max_body_is_cut_and_its_connection_not_kept(
    server: Server, chunked: bool
) -> None:
    extra = {"chunked": 1} if chunked else {}
    status, body = http_post.exchange(server.url(size=5000, **extra), b"{}", HEADERS, 5.0, 1234)
    assert status == 200 and body == letters(1234)
    assert http_post._connections() == {}  # closed, not kept
    assert http_post.exchange(server.url(size=10), b"{}", HEADERS, 5.0, 1234) == (200, letters(10))
    assert [number for number, _ in server.served] == [1, 2]  # the next call: a new one


def test_a_body_of_exactly_max_body_is_whole_and_its_connection_kept(server: Server) -> None:
    assert http_post.exchange(server.url(size=1234), b"{}", HEADERS, 5.0, 1234) == (
        200,
        letters(1234),
    )
    assert http_post.exchange(server.url(size=3), b"{}", HEADERS, 5.0, 1234) == (200, letters(3))
    assert [number for number, _ in server.served] == [1, 1]


def test_a_kept_alive_connection_times_out_by_the_timeout_of_the_call(server: Server) -> None:
    """Opened with 30 s, then asked with 0.3 s for an answer the server holds back 20 s:
    the call times out (with the connection's own timeout it would get its answer)."""
    assert http_post.exchange(server.url(), b"{}", HEADERS, 30.0, 100) == (200, b"ab")
    with pytest.raises(TimeoutError):
        http_post.exchange(server.url(wait=20), b"{}", HEADERS, 0.3, 100)
    assert [number for number, _ in server.served] == [1, 1]  # on the kept-alive one
    assert http_post._connections() == {}  # a connection that timed out is not kept
    assert http_post.exchange(server.url(), b"{}", HEADERS, 30.0, 100) == (200, b"ab")
    assert server.served[-1][0] == 2


def test_a_kept_alive_connection_waits_as_long_as_the_call_allows(server: Server) -> None:
    """Opened with 0.5 s, then asked with 30 s for an answer held back 1.5 s: it comes."""
    assert http_post.exchange(server.url(), b"{}", HEADERS, 0.5, 100) == (200, b"ab")
    assert http_post.exchange(server.url(wait=1.5), b"{}", HEADERS, 30.0, 100) == (200, b"ab")
    assert [number for number, _ in server.served] == [1, 1]
