"""The README's first command: `flowledger run` on the embedded default, no servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import TERMINAL
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env["FLOWLEDGER_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(BIN / "flowledger"), "run", "--port", str(port)],
        cwd=tmp_path,  # ./var/ lands here
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "run.log").open("w"),
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, (tmp_path / "run.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert (tmp_path / "var" / "flowledger.db").exists()


def test_flowledger_run_serves_the_whole_journey(embedded: str) -> None:
    api = httpx.Client(base_url=f"{embedded}/api/v1", timeout=30)
    user = {"email": "solo@example.com", "password": "correct horse", "full_name": "Solo"}
    assert api.post("/auth/register", json=user).status_code == 201
    login = {"email": user["email"], "password": user["password"]}
    token = api.post("/auth/login", json=login).json()["access_token"]
    api.headers["Authorization"] = f"Bearer {token}"
    org = api.post("/organizations", json={"name": "Solo", "tenant_id": "solo"})
    assert org.status_code == 201, org.text
    with FakeN8n() as n8n:
        wf = api.post("/workflows", json={"name": "e", "webhook_url": n8n.webhook_url("sync")})
        assert wf.status_code == 201, wf.text
        answer = api.post("/execute", json={"workflow_id": wf.json()["id"], "data": {"a": 1}})
        assert answer.status_code == 200, answer.text
        queued = api.post(f"/workflows/{wf.json()['id']}/execute", json={"input": {}})
        assert queued.status_code == 202
        execution_id = queued.json()["execution_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = api.get(f"/executions/{execution_id}").json().get("status")
            if status in TERMINAL:
                break
            time.sleep(0.05)
        assert status == "completed"
    assert api.get("/credits/balance").json()["balance"] == 98
