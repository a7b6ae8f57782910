"""`/audit`: the organization's events by position, any aggregate at any version, its history.

Owners, admins and auditors only (the `audit` need of `api/auth.py`). The log and history
come from the `audit` read model (already redacted); time travel replays the aggregate with
the library's own `repository.get(id, version=N)` and redacts its state with the same
function. Every read first waits (bounded) for the read model to reach the log's top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon
from eventsourcing.application import AggregateNotFoundError

from events.errors import InvalidInput, NotFound
from projections.audit import history, log_page, owner_of
from projections.redaction import public_fields, redact

if TYPE_CHECKING:
    from api.app import Deps

MAX_LIMIT = 1000
MAX_POSITION = 2**63 - 1  # a log position is a 64-bit integer; past it the query overflowed


def _uuid_param(req: falcon.Request, name: str) -> UUID | None:
    value = req.get_param(name)
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise falcon.HTTPInvalidParam("a UUID", name) from None


class Log:
    auth = {"GET": "audit"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        after = req.get_param_as_int("after", min_value=0, max_value=MAX_POSITION, default=0)
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT, default=100)
        event_type = req.get_param("event_type")
        if event_type is not None and not 0 < len(event_type) <= 200:
            raise falcon.HTTPInvalidParam("1 to 200 characters", "event_type")
        aggregate_id = _uuid_param(req, "aggregate_id")
        self.deps.settle("audit")
        resp.text = log_page(
            self.deps.db,
            req.context.principal.org_id,
            after=after,
            limit=limit,
            event_type=event_type,
            aggregate_id=aggregate_id,
        )


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def owned(self, req: falcon.Request, aggregate_id: UUID) -> str:
        """The aggregate's type, if it belongs to the caller's organization (else 404, so
        another tenant's ids reveal nothing)."""
        self.deps.settle("audit")
        owner = owner_of(self.deps.db, aggregate_id)
        if owner is None or owner[0] != str(req.context.principal.org_id):
            raise NotFound("aggregate not found", aggregate_id=str(aggregate_id))
        return owner[1]


class Aggregate(Resource):
    auth = {"GET": "audit"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, aggregate_id: UUID) -> None:
        version = req.get_param_as_int("version", min_value=1)
        aggregate_type = self.owned(req, aggregate_id)
        repository = self.deps.app.repository
        try:
            latest: Any = repository.get(aggregate_id)
            if version is not None and version > latest.version:
                raise InvalidInput(
                    f"version {version} is beyond the aggregate's latest version {latest.version}",
                    field="version",
                    latest_version=latest.version,
                )
            found: Any = (
                latest if version is None else repository.get(aggregate_id, version=version)
            )
        except AggregateNotFoundError:
            raise NotFound("aggregate not found", aggregate_id=str(aggregate_id)) from None
        state = {
            **public_fields(found),
            "created_on": found.created_on,
            "modified_on": found.modified_on,
        }
        resp.media = {
            "aggregate_id": str(aggregate_id),
            "aggregate_type": aggregate_type,
            "version": found.version,
            "state": redact(state),
        }


class History(Resource):
    auth = {"GET": "audit"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, aggregate_id: UUID) -> None:
        self.owned(req, aggregate_id)
        org_id = req.context.principal.org_id
        resp.media = {"items": history(self.deps.db, org_id, aggregate_id)}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    item = prefix + "/audit/aggregates/{aggregate_id:uuid}"
    app.add_route(f"{prefix}/audit/log", Log(deps))
    app.add_route(item, Aggregate(deps))
    app.add_route(f"{item}/history", History(deps))
