"""Helpers to run a real n8n for Flowledger's end-to-end test (see shared N8N.md).

What was learned by running it on this machine (Node 20.20, PostgreSQL 15, n8n 1.123.81):

* Install: ``package.json`` = ``{"private": true, "dependencies": {"n8n": "1.123.81"},
  "overrides": {"xlsx": "0.18.5"}}`` then ``npm install --no-audit --no-fund --ignore-scripts``:
  ~2 min here, 1919 packages, 1.8 GB. A few ``EBADENGINE`` warnings (some deps want Node 22)
  are harmless. ``ensure_installed`` skips all this when ``node_modules/n8n`` already has the
  pinned version, so a rerun costs nothing.
* Start: ``n8n start`` with the env of :func:`n8n_env` on a freshly created database is
  ready after ~6 s (migrations included); :func:`stop` (SIGTERM) takes ~1.5 s, exit code 0.
  ``GET /healthz`` answers ``{"status":"ok"}`` within ~2 s, *before* migrations are done
  and before the ``/rest`` and ``/webhook`` routes exist: until the log says "Editor is now
  accessible via" they answer 404, or even 200 with the text "n8n is starting up. Please
  wait". So :func:`start` waits for ``/healthz`` and then for ``GET /rest/settings`` to
  answer 200 *with JSON* (``{"data": {...}}``).
* Owner: ``POST /rest/owner/setup`` ``{"email", "firstName", "lastName", "password"}`` → 200
  and cookie **``n8n-auth``** (HttpOnly, SameSite=Lax; not Secure thanks to
  ``N8N_SECURE_COOKIE=false``). A second call → 400 "Instance owner already setup"; then
  ``POST /rest/login`` ``{"emailOrLdapLoginId", "password"}`` gives the same cookie.
* API key: ``POST /rest/api-keys`` with the cookie, ``{"label", "scopes", "expiresAt": null}`` →
  ``{"data": {"id", "label", "apiKey": "******xxxx", "rawApiKey": "<JWT>", ...}}``: the key is
  **``data.rawApiKey``** (``apiKey`` is only a mask). ``GET /rest/api-keys/scopes`` lists the
  scopes an owner may grant.
* Public API (header ``X-N8N-API-KEY``): ``POST /api/v1/workflows`` needs ``name``, ``nodes``,
  ``connections`` *and* ``settings`` (``active`` is read-only there);
  ``POST /api/v1/workflows/{id}/activate`` → the workflow with ``active: true``; the webhook
  answers right after that call returns (creating + activating two workflows: ~0.5 s).
  Workflow ids are 16-character strings (``"35wGAEWWKncbJS8Z"``). ``GET /api/v1/workflows``
  returns ``{"data": [...full workflows with nodes...], "nextCursor": null}``; ``limit`` may be
  at most 250 (251 → 400); a wrong key → 401 ``{"message": "unauthorized"}``. An unknown
  webhook → 404 ``{"code": 404, "message": "The requested webhook \"POST x\" is not
  registered.", "hint": ..., "stacktrace": ...}``.
* The working workflow JSON is what :func:`webhook_workflow` builds: Webhook node
  ``n8n-nodes-base.webhook`` typeVersion 2 with ``httpMethod: POST`` and a ``webhookId``;
  the posted JSON is ``$json.body`` in the next node.

  - ``sync``: ``responseMode: "responseNode"`` → "Respond to Webhook"
    (``n8n-nodes-base.respondToWebhook`` typeVersion 1.1, ``respondWith: "json"``,
    ``responseBody: "={{ { \"result\": \"from n8n\", \"input\": $json.body.input } }}"``).
    ``POST /webhook/<path>`` ``{"input": {"a": 1}}`` → 200
    ``{"result": "from n8n", "input": {"a": 1}}``, ~30 ms warm.
  - ``callback``: ``responseMode: "onReceived"`` → answers 200
    ``{"message": "Workflow was started"}`` at once; then "HTTP Request"
    (``n8n-nodes-base.httpRequest`` typeVersion 4.2, ``method: POST``,
    ``url: "={{ $json.body.callback.status_url }}"``, ``sendHeaders`` with a
    ``X-Callback-Token: ={{ $json.body.callback.token }}`` header parameter, ``sendBody`` with
    ``specifyBody: "json"`` and a ``jsonBody`` expression built with ``JSON.stringify``)
    posts ``{"execution_id": ..., "status": "completed", "data": {"result": "from n8n
    callback"}}`` to the gateway ~50 ms after the webhook answered (header sent as
    ``x-callback-token``, ``Content-Type: application/json``, ``User-Agent: axios/1.18.0``,
    ``Connection: close``).

  In expressions never let the object's ``}`` touch the closing ``}}``: write ``} }}``.
* ``N8N_RUNNERS_ENABLED=false`` and ``N8N_EXPRESSION_ENGINE=legacy`` print deprecation warnings
  at start; they are expected (native builds are skipped, see N8N.md).

Usage in a test::

    ensure_installed()
    proc = start(port=5678)
    try:
        key = setup_owner_and_api_key("http://127.0.0.1:5678")
        create_webhook_workflow("http://127.0.0.1:5678", key, "fl-sync", "sync")
        ...
    finally:
        stop(proc)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

N8N_VERSION = "1.123.81"
PACKAGE_JSON = {
    "private": True,
    "dependencies": {"n8n": N8N_VERSION},
    "overrides": {"xlsx": "0.18.5"},
}
DB_HOST = "127.0.0.1"
DB_USER = "root"
DEFAULT_DATABASE = "n8n_e2e"
OWNER_EMAIL = "owner@flowledger.test"
OWNER_PASSWORD = "Flowledger-e2e-Passw0rd"  # n8n wants 8+ chars, a digit and an upper case
API_KEY_SCOPES = [
    "workflow:create",
    "workflow:read",
    "workflow:update",
    "workflow:delete",
    "workflow:list",
    "workflow:activate",
    "workflow:deactivate",
    "execution:read",
    "execution:list",
]
INSTALL_TIMEOUT = 15 * 60
START_TIMEOUT = 180.0


class N8nError(RuntimeError):
    """Installing, starting or talking to the real n8n failed."""


def default_dir() -> Path:
    return Path(os.environ.get("FLOWLEDGER_N8N_DIR", "/tmp/flowledger-n8n"))


def n8n_bin(dir: Path | None = None) -> Path:
    return (dir or default_dir()) / "node_modules" / ".bin" / "n8n"


def installed_version(dir: Path | None = None) -> str | None:
    pkg = (dir or default_dir()) / "node_modules" / "n8n" / "package.json"
    if not n8n_bin(dir).exists() or not pkg.exists():
        return None
    try:
        return str(json.loads(pkg.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_installed(dir: Path | None = None, timeout: float = INSTALL_TIMEOUT) -> Path:
    """Install n8n under ``dir`` (default ``$FLOWLEDGER_N8N_DIR`` or /tmp/flowledger-n8n).

    Does nothing when the pinned version is already there. Safe to call from several processes
    at once (a file lock serialises them). Returns the path of the ``n8n`` executable; raises
    :class:`N8nError` with the tail of ``install.log`` when npm fails or times out.
    """
    dir = Path(dir) if dir is not None else default_dir()
    dir.mkdir(parents=True, exist_ok=True)
    if installed_version(dir) == N8N_VERSION:
        return n8n_bin(dir)
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise N8nError("node and npm are needed to install n8n (apt-get install nodejs npm)")
    with open(dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(dir) == N8N_VERSION:  # another process did it meanwhile
            return n8n_bin(dir)
        (dir / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
        log_path = dir / "install.log"
        started = time.monotonic()
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(
                    ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"],
                    cwd=dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise N8nError(
                    f"npm install of n8n timed out after {timeout:.0f}s; log {log_path}:\n"
                    f"{_tail(log_path)}"
                ) from exc
        if proc.returncode != 0 or installed_version(dir) != N8N_VERSION:
            raise N8nError(
                f"npm install of n8n {N8N_VERSION} failed (exit {proc.returncode}) in {dir}; "
                f"log {log_path}:\n{_tail(log_path)}"
            )
        elapsed = time.monotonic() - started
        with open(log_path, "a") as log:
            log.write(f"\nflowledger: installed n8n {N8N_VERSION} in {elapsed:.0f}s\n")
    return n8n_bin(dir)


def recreate_database(name: str = DEFAULT_DATABASE) -> None:
    """Drop (forcing out old sessions) and create n8n's own database."""
    base = ["-h", DB_HOST, "-U", DB_USER]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    for cmd in (
        ["dropdb", *base, "--if-exists", "--force", name],
        ["createdb", *base, name],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise N8nError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def n8n_env(dir: Path, port: int, database: str = DEFAULT_DATABASE) -> dict[str, str]:
    """The environment n8n runs with (N8N.md's, plus switches that avoid outside calls)."""
    return {
        **os.environ,
        "N8N_USER_FOLDER": str(dir / f"home-{port}"),
        "DB_TYPE": "postgresdb",
        "DB_POSTGRESDB_HOST": DB_HOST,
        "DB_POSTGRESDB_PORT": "5432",
        "DB_POSTGRESDB_DATABASE": database,
        "DB_POSTGRESDB_USER": DB_USER,
        "DB_POSTGRESDB_PASSWORD": "",
        "N8N_PORT": str(port),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        "N8N_HOST": "127.0.0.1",
        "N8N_PROTOCOL": "http",
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/",
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_RUNNERS_ENABLED": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_EXPRESSION_ENGINE": "legacy",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
        "NODE_ENV": "production",
    }


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(
    dir: Path | None = None,
    port: int = 5678,
    *,
    database: str = DEFAULT_DATABASE,
    timeout: float = START_TIMEOUT,
) -> subprocess.Popen[bytes]:
    """Start n8n on 127.0.0.1:``port`` with a fresh database and wait until it serves.

    The process runs in its own session (so :func:`stop` can end its whole group); its output
    goes to ``<dir>/n8n-<port>.log`` (the path is also in ``proc.log_path``).
    """
    dir = Path(dir) if dir is not None else default_dir()
    exe = n8n_bin(dir)
    if not exe.exists():
        raise N8nError(f"n8n is not installed in {dir}: call ensure_installed() first")
    if _port_in_use(port):
        raise N8nError(f"port {port} is already taken: is another n8n still running?")
    recreate_database(database)
    home = dir / f"home-{port}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    log_path = dir / f"n8n-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
    proc = subprocess.Popen(
        [str(exe), "start"],
        cwd=dir,
        env=n8n_env(dir, port, database),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.log_path = log_path  # type: ignore[attr-defined]
    proc.log_file = log  # type: ignore[attr-defined]
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, proc, timeout=timeout, log_path=log_path)
    except BaseException:
        stop(proc)
        raise
    return proc


def wait_ready(
    base_url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = START_TIMEOUT,
    log_path: Path | None = None,
) -> None:
    """Wait for ``/healthz`` and then for the REST routes (they come after the migrations)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=5) as client:
        for probe in ("/healthz", "/rest/settings"):
            while True:
                if proc is not None and proc.poll() is not None:
                    raise N8nError(
                        f"n8n exited with {proc.returncode} while starting:\n"
                        f"{_tail(log_path) if log_path else ''}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    resp = client.get(probe)
                    # While starting, n8n answers 404 or even 200 "n8n is starting up. Please
                    # wait" (text/html): only a JSON answer means the routes are there.
                    if resp.status_code == 200 and isinstance(resp.json(), dict):
                        break
                if time.monotonic() > deadline:
                    raise N8nError(
                        f"n8n at {base_url} not ready within {timeout:.0f}s ({probe} failing):\n"
                        f"{_tail(log_path) if log_path else ''}"
                    )
                time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop an n8n started by :func:`start` (SIGTERM to its group, SIGKILL if it lingers)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    log = getattr(proc, "log_file", None)
    if log is not None:
        log.close()


def setup_owner_and_api_key(
    base_url: str,
    email: str = OWNER_EMAIL,
    password: str = OWNER_PASSWORD,
    label: str | None = None,
) -> str:
    """Create the instance owner (or log in if it exists) and return a new public-API key."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        resp = client.post(
            "/rest/owner/setup",
            json={"email": email, "firstName": "Flow", "lastName": "Ledger", "password": password},
        )
        if resp.status_code == 400 and "already setup" in resp.text:
            resp = client.post(
                "/rest/login", json={"emailOrLdapLoginId": email, "password": password}
            )
        if resp.status_code != 200 or "n8n-auth" not in client.cookies:
            raise N8nError(f"n8n owner setup/login failed: {resp.status_code} {resp.text[:500]}")
        resp = client.post(
            "/rest/api-keys",
            json={
                "label": label or f"flowledger-e2e-{uuid.uuid4().hex[:8]}",
                "scopes": API_KEY_SCOPES,
                "expiresAt": None,
            },
        )
        if resp.status_code != 200:
            raise N8nError(f"n8n API key creation failed: {resp.status_code} {resp.text[:500]}")
        return str(resp.json()["data"]["rawApiKey"])


def webhook_workflow(path: str, mode: str, name: str | None = None) -> dict[str, Any]:
    """The workflow JSON (public-API shape) of a Webhook-triggered workflow for ``mode``.

    ``sync``: answers ``{"result": "from n8n", "input": <posted input>}`` via Respond to Webhook.
    ``callback``: answers at once, then POSTs the contract's callback to ``callback.status_url``.
    """
    webhook_id = str(uuid.uuid4())
    webhook: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": "Webhook",
        "type": "n8n-nodes-base.webhook",
        "typeVersion": 2,
        "position": [0, 0],
        "webhookId": webhook_id,
        "parameters": {"httpMethod": "POST", "path": path, "options": {}},
    }
    if mode == "sync":
        webhook["parameters"]["responseMode"] = "responseNode"
        second: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "name": "Respond to Webhook",
            "type": "n8n-nodes-base.respondToWebhook",
            "typeVersion": 1.1,
            "position": [220, 0],
            "parameters": {
                "respondWith": "json",
                "responseBody": '={{ { "result": "from n8n", "input": $json.body.input } }}',
                "options": {},
            },
        }
    elif mode == "callback":
        webhook["parameters"]["responseMode"] = "onReceived"
        second = {
            "id": str(uuid.uuid4()),
            "name": "Report to Flowledger",
            "type": "n8n-nodes-base.httpRequest",
            "typeVersion": 4.2,
            "position": [220, 0],
            "parameters": {
                "method": "POST",
                "url": "={{ $json.body.callback.status_url }}",
                "sendHeaders": True,
                "headerParameters": {
                    "parameters": [
                        {"name": "X-Callback-Token", "value": "={{ $json.body.callback.token }}"}
                    ]
                },
                "sendBody": True,
                "specifyBody": "json",
                "jsonBody": (
                    "={{ JSON.stringify({ execution_id: $json.body.execution_id, "
                    "status: 'completed', data: { result: 'from n8n callback' } }) }}"
                ),
                "options": {},
            },
        }
    else:
        raise ValueError(f"mode must be 'sync' or 'callback', not {mode!r}")
    return {
        "name": name or f"flowledger-e2e {mode} {path}",
        "nodes": [webhook, second],
        "connections": {
            "Webhook": {"main": [[{"node": second["name"], "type": "main", "index": 0}]]}
        },
        "settings": {"executionOrder": "v1"},
    }


def create_webhook_workflow(
    base_url: str, api_key: str, path: str, mode: str, name: str | None = None
) -> dict[str, Any]:
    """Create and activate (public API) a Webhook workflow answering ``POST /webhook/<path>``.

    Returns n8n's workflow JSON after activation (``id``, ``active: true``, ``nodes``...).
    """
    headers = {"X-N8N-API-KEY": api_key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        resp = client.post("/api/v1/workflows", json=webhook_workflow(path, mode, name))
        if resp.status_code != 200:
            raise N8nError(f"creating workflow failed: {resp.status_code} {resp.text[:500]}")
        workflow_id = resp.json()["id"]
        resp = client.post(f"/api/v1/workflows/{workflow_id}/activate")
        if resp.status_code != 200 or not resp.json().get("active"):
            raise N8nError(f"activating workflow failed: {resp.status_code} {resp.text[:500]}")
        return dict(resp.json())


@dataclass
class RunningN8n:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]

    def webhook_url(self, path: str) -> str:
        return f"{self.base_url}/webhook/{path}"


@contextlib.contextmanager
def running_n8n(
    dir: Path | None = None, port: int = 5678, database: str = DEFAULT_DATABASE
) -> Iterator[RunningN8n]:
    """Install if needed, start, set up owner + API key; stop on exit."""
    ensure_installed(dir)
    proc = start(dir, port, database=database)
    try:
        base_url = f"http://127.0.0.1:{port}"
        yield RunningN8n(base_url, setup_owner_and_api_key(base_url), proc)
    finally:
        stop(proc)
