"""The workers' POSTs (webhook attempts, calls to n8n): `http.client`, one kept-alive
connection per thread and host.

Measured on the 2-core machine against a local keep-alive receiver, `httpx.Client.post`
cost ~0.9 ms of client CPU per request and `http.client` ~0.1 ms; at hundreds of
deliveries or executions per second that difference was a core. What a POST needs is small: one
request, a timeout, no redirects, no cookies, TLS with verified certificates (the CA bundle
httpx uses, `certifi`), credentials in the URL sent as basic auth (as httpx does), a
kept-alive connection. Each worker thread keeps its own connections (no pool lock); a
kept-alive connection the server has closed is noticed before reuse, and a request that
fails on a reused connection before any answer is sent again once on a new one (receivers
dedupe on `webhook-id`, and at-least-once allows it).
"""

from __future__ import annotations

import base64
import http.client
import select
import ssl
import threading
from functools import cache
from urllib.parse import unquote, urlsplit

import certifi

#: Bytes of an answer's body read (and dropped); a longer body closes the connection.
MAX_BODY = 65_536
#: Kept-alive connections per thread; beyond, the oldest is closed.
MAX_CONNECTIONS = 64

_local = threading.local()


@cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def _connections() -> dict[tuple[str, str], http.client.HTTPConnection]:
    found: dict[tuple[str, str], http.client.HTTPConnection] | None = getattr(
        _local, "connections", None
    )
    if found is None:
        found = _local.connections = {}
    return found


def _open(scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(netloc, timeout=timeout, context=_tls())
    if scheme == "http":
        return http.client.HTTPConnection(netloc, timeout=timeout)
    raise ValueError(f"unsupported URL scheme: {scheme!r}")


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that is readable was closed (or is broken): not reusable."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST `body`; the status code (the answer's body is dropped). Raises `TimeoutError`,
    `OSError`, `ValueError` (not an http(s) URL) or `http.client.HTTPException` (an
    unreadable answer) like a socket would."""
    return exchange(url, body, headers, timeout, MAX_BODY)[0]


def exchange(
    url: str, body: bytes, headers: dict[str, str], timeout: float, max_body: int
) -> tuple[int, bytes]:
    """POST `body`; the status code and up to `max_body` bytes of the answer's body (a
    longer body is cut there and its connection closed). Raises as `post`."""
    parts = urlsplit(url)
    address = parts.netloc.rpartition("@")[2]  # credentials in the URL go in a header
    key = (parts.scheme, address)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.username is not None:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        basic = base64.b64encode(user.encode()).decode()
        headers = {**headers, "Authorization": f"Basic {basic}"}
    pool = _connections()
    conn = pool.pop(key, None)
    reused = conn is not None and not _closed_by_peer(conn)
    if conn is not None and not reused:
        conn.close()
    if conn is None or not reused:
        conn = _open(parts.scheme, address, timeout)
    elif conn.sock is not None:
        conn.sock.settimeout(timeout)  # this call's timeout, not the one it was opened with
    try:
        status, answer, keep = _exchange(conn, target, body, headers, max_body)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        conn.close()
        if not reused:
            raise
        conn = _open(parts.scheme, address, timeout)  # the kept-alive one was stale
        try:
            status, answer, keep = _exchange(conn, target, body, headers, max_body)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        conn.close()
        raise
    if keep:
        if len(pool) >= MAX_CONNECTIONS:
            oldest = next(iter(pool))
            pool.pop(oldest).close()
        pool[key] = conn
    else:
        conn.close()
    return status, answer


def _exchange(
    conn: http.client.HTTPConnection,
    target: str,
    body: bytes,
    headers: dict[str, str],
    max_body: int,
) -> tuple[int, bytes, bool]:
    """One request and its answer; (status, body, whether the connection can be kept)."""
    conn.request("POST", target, body=body, headers=headers)
    answer = conn.getresponse()
    content = answer.read(max_body)
    keep = answer.isclosed() and not answer.will_close
    return answer.status, content, keep


def close_all() -> None:
    """Close this thread's connections (tests, shutdown)."""
    pool = _connections()
    while pool:
        pool.popitem()[1].close()
