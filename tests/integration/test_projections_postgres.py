"""The read models' tests, run against PostgreSQL: same commands, same queries, same answers.

The tests are imported from the unit suite; only the `app` fixture differs. They share one
database per session, so each test works inside organizations of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from events.application import Flowledger
from flowledger.settings import Settings
from tests.unit.test_projections import (
    test_balance_is_the_sum_of_the_transaction_rows,
    test_completed_execution_reads_back_with_its_logs,
    test_execution_cancelled_while_queued_costs_nothing,
    test_execution_queries_filter_and_page_newest_first,
    test_execution_rejected_when_the_balance_is_short_at_start,
    test_execution_version_grows_with_every_change,
    test_failed_execution_is_refunded_in_full,
    test_queued_executions_count_on_their_workflow,
    test_replaying_from_position_zero_changes_nothing,
    test_small_batches_give_the_same_read_models,
    test_transactions_filter_by_type_and_page,
    test_unfinished_executions_are_refunded,
    test_updates_and_activation_change_the_workflow,
    test_usage_logs_name_the_workflow_and_count_credits,
    test_workflow_queries_filter_search_and_page_newest_first,
    test_workflow_reads_back_in_the_contract_shape,
    test_workflows_of_another_organization_are_not_found,
)

__all__ = [
    "test_balance_is_the_sum_of_the_transaction_rows",
    "test_completed_execution_reads_back_with_its_logs",
    "test_execution_cancelled_while_queued_costs_nothing",
    "test_execution_queries_filter_and_page_newest_first",
    "test_execution_rejected_when_the_balance_is_short_at_start",
    "test_execution_version_grows_with_every_change",
    "test_failed_execution_is_refunded_in_full",
    "test_queued_executions_count_on_their_workflow",
    "test_replaying_from_position_zero_changes_nothing",
    "test_small_batches_give_the_same_read_models",
    "test_transactions_filter_by_type_and_page",
    "test_unfinished_executions_are_refunded",
    "test_updates_and_activation_change_the_workflow",
    "test_usage_logs_name_the_workflow_and_count_credits",
    "test_workflow_queries_filter_search_and_page_newest_first",
    "test_workflow_reads_back_in_the_contract_shape",
    "test_workflows_of_another_organization_are_not_found",
]


@pytest.fixture
def app(pg_settings: Settings) -> Iterator[Flowledger]:
    application = Flowledger(pg_settings)
    assert application.db.dialect == "postgres"
    yield application
    application.close()
    application.db.close()
