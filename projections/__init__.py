"""Read models: one module per model (tables, handlers, queries) and the runner."""

from __future__ import annotations

from projections.alerts import AlertsProjection
from projections.audit import AuditChainProjection, AuditProjection
from projections.automation_events import AutomationEventsProjection
from projections.credits import CreditsProjection
from projections.deliveries import DeliveriesProjection
from projections.executions import ExecutionsProjection
from projections.provider_keys import ProviderKeysProjection
from projections.runner import Projection
from projections.workflows import WorkflowsProjection


def all_projections() -> list[Projection]:
    """One instance of every read model."""
    return [
        WorkflowsProjection(),
        ExecutionsProjection(),
        CreditsProjection(),
        AutomationEventsProjection(),
        DeliveriesProjection(),
        ProviderKeysProjection(),
        AuditChainProjection(),
        AuditProjection(),
        AlertsProjection(),
    ]
