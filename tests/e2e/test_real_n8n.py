"""Flowledger against a real n8n (see ../shared/N8N.md): both response modes.

Deselect locally with `-m 'not real_n8n'`; CI installs n8n (cached) and runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import sign_up
from tests.support import real_n8n
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.real_n8n


@pytest.fixture(scope="module")
def n8n_server() -> Iterator[real_n8n.RunningN8n]:
    with real_n8n.running_n8n(port=free_port()) as server:
        yield server


def test_runs_real_n8n_workflows_in_both_modes(
    stack: Stack, n8n_server: real_n8n.RunningN8n
) -> None:
    sync_path, callback_path = (f"fl-{mode}-{uuid.uuid4().hex[:6]}" for mode in ("sync", "cb"))
    for path, mode in ((sync_path, "sync"), (callback_path, "callback")):
        real_n8n.create_webhook_workflow(n8n_server.base_url, n8n_server.api_key, path, mode)
    tenant = sign_up(stack)
    sync_wf = tenant.workflow(n8n_server.webhook_url(sync_path), credits_per_execution=2)
    answer = tenant.api.post("/execute", json={"workflow_id": sync_wf["id"], "data": {"q": "hi"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"result": "from n8n", "input": {"q": "hi"}}

    callback_wf = tenant.workflow(
        n8n_server.webhook_url(callback_path), response_mode="callback", credits_per_execution=3
    )
    queued = tenant.api.post(f"/workflows/{callback_wf['id']}/execute", json={"input": {"x": 1}})
    assert queued.status_code == 202, queued.text
    done = tenant.execution(queued.json()["execution_id"], timeout=60)
    assert done["status"] == "completed", done
    assert done["output"] == {"result": "from n8n callback"}
    assert tenant.balance() == 100 - 2 - 3
