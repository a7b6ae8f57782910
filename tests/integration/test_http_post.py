"""The POST of a webhook attempt (`workers.http_post`) against real HTTP servers, and the
per-endpoint slots (`EndpointSlots` on `ScriptedRedisBackend`) against the real Redis."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import uuid4

import pytest
import redis

from flowledger.settings import Settings
from workers import broker

broker.setup(Settings())  # the in-process broker, before the actors module is imported

from workers import http_post  # noqa: E402
from workers.webhooks import EndpointSlots, ScriptedRedisBackend  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"


class Server:
    """A real HTTP/1.1 server counting connections and requests; it may close each
    connection after answering (`close_after`), or answer with a status of our choosing."""

    def __init__(self, status: int = 200, close_after: bool = False) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.auth: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                owner.connections += 1
                super().setup()

            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                owner.auth.append(self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                if close_after:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"ok")
                if close_after:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook?x=1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    one = Server()
    yield one
    one.stop()
    http_post.close_all()


HEADERS = {"Content-Type": "application/json", "webhook-id": "x"}


def test_keeps_one_connection_alive_per_host(server: Server) -> None:
    for n in range(5):
        assert http_post.post(server.url, b'{"n":%d}' % n, HEADERS, 5.0) == 200
    assert server.connections == 1
    assert server.bodies == [b'{"n":%d}' % n for n in range(5)]


def test_credentials_in_the_url_are_sent_as_basic_auth(server: Server) -> None:
    url = server.url.replace("http://", "http://hook%40user:s3cret@")
    assert http_post.post(url, b"{}", HEADERS, 5.0) == 200
    assert http_post.post(server.url, b"{}", HEADERS, 5.0) == 200
    assert server.auth == ["Basic aG9va0B1c2VyOnMzY3JldA==", None]  # hook@user:s3cret


def test_a_connection_the_server_closed_is_not_reused() -> None:
    closing = Server(status=500, close_after=True)
    try:
        for _ in range(3):
            assert http_post.post(closing.url, b"{}", HEADERS, 5.0) == 500
        assert closing.connections == 3 and len(closing.bodies) == 3
    finally:
        closing.stop()
        http_post.close_all()


def test_a_kept_alive_connection_dropped_while_idle_is_replaced(server: Server) -> None:
    assert http_post.post(server.url, b"{}", HEADERS, 5.0) == 200
    [conn] = http_post._connections().values()
    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)  # as if the peer went away while idle
    assert http_post.post(server.url, b"{}", HEADERS, 5.0) == 200
    assert server.connections == 2 and len(server.bodies) == 2


def test_a_refused_connection_and_a_timeout_raise() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(OSError):
        http_post.post(f"http://127.0.0.1:{port}/x", b"{}", HEADERS, 5.0)
    silent = socket.socket()  # accepts (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        with pytest.raises(TimeoutError):
            http_post.post(url, b"{}", HEADERS, 0.2)
    finally:
        silent.close()
        http_post.close_all()


def test_endpoint_slots_cap_concurrent_holders_across_clients() -> None:
    key = f"fl-test-{uuid4().hex[:8]}:webhook-endpoint:x"
    one, two = ScriptedRedisBackend(url=REDIS_URL), ScriptedRedisBackend(url=REDIS_URL)
    slots = [EndpointSlots(b, key, limit=2, ttl=30_000) for b in (one, two, one)]
    try:
        assert slots[0]._acquire() and slots[1]._acquire()
        assert not slots[2]._acquire()  # the cap: 2 holders
        assert slots[0]._release()
        assert slots[2]._acquire()
        client = redis.Redis.from_url(REDIS_URL)
        assert int(client.get(key) or 0) == 2
        assert 0 < client.pttl(key) <= 30_000
        assert slots[1]._release() and slots[2]._release()
        assert not slots[0]._release()  # never below 0
        assert int(client.get(key) or 0) == 0
    finally:
        redis.Redis.from_url(REDIS_URL).delete(key)
