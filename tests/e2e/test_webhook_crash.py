"""kill -9 of the worker in the middle of a webhook POST: the delivery still succeeds."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import sign_up
from tests.support.stack import Stack
from tests.support.waiting import until
from tests.support.webhook_receiver import Receiver, serve


def test_worker_killed_mid_delivery_still_delivers(stack: Stack) -> None:
    got = Receiver(sleep={"/crash": 2.0})
    server = serve(got)
    try:
        tenant = sign_up(stack)
        url = f"http://127.0.0.1:{server.server_port}/crash"
        created = tenant.api.post(
            "/webhooks/endpoints", json={"url": url, "event_types": ["workflow.created"]}
        )
        assert created.status_code == 201, created.text
        tenant.workflow("https://n8n.example.com/webhook/x")
        until(lambda: "/crash" in got.arrived, timeout=30)
        stack.kill("worker")  # SIGKILL while the POST is in flight: no attempt recorded
        stack.start("worker")

        def succeeded() -> Any:
            items = tenant.api.get("/webhooks/deliveries").json()["items"]
            return items if items and items[0]["status"] == "succeeded" else None

        [delivery] = until(succeeded, timeout=60)
        assert len(got.arrived) >= 2  # the requeued message POSTed again
        assert {r.headers["webhook-id"] for r in got.got} == {delivery["event_id"]}
        assert [a["status_code"] for a in delivery["attempts"]] == [204]
    finally:
        server.shutdown()
        server.server_close()
