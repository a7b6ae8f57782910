"""Rate limits in one process (the in-memory counter): per plan, per IP, per email on login.

Windows are fixed minutes, so a burst that straddles the turn of a minute would see two
windows. `one_window` starts a burst early in a minute and, should it straddle anyway (a
very slow machine), tries again with a fresh organization; it never asserts durations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

WINDOW = 60


def one_window(burst: Callable[[int], list[Any]], attempts: int = 3) -> list[Any]:
    """Answers of `burst(attempt)` that all fell in one rate-limit window."""
    for attempt in range(attempts):
        into_minute = time.time() % WINDOW
        if into_minute > WINDOW - 20:  # too close to the turn: start just after it
            time.sleep(WINDOW - into_minute + 0.05)
        answers = burst(attempt)
        if len({a.headers["X-RateLimit-Reset"] for a in answers}) == 1:
            return answers
    raise AssertionError(f"no burst fitted in one window in {attempts} attempts")


def check_limited(answers: list[Any], limit: int) -> None:
    """Exactly `limit` succeed; every other one is a complete 429."""
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code != 200]
    assert len(ok) == limit, sorted(a.status_code for a in answers)
    assert sorted(int(a.headers["X-RateLimit-Remaining"]) for a in ok) == list(range(limit))
    reset = int(answers[0].headers["X-RateLimit-Reset"])
    assert reset % WINDOW == 0 and reset > time.time() - WINDOW
    for answer in answers:
        assert answer.headers["X-RateLimit-Limit"] == str(limit)
    for answer in limited:
        error = assert_error(answer, 429, "RATE_LIMIT_EXCEEDED")
        retry_after = error["details"]["retry_after"]
        assert isinstance(retry_after, int) and 1 <= retry_after <= WINDOW
        assert answer.headers["Retry-After"] == str(retry_after)
        assert answer.headers["X-RateLimit-Remaining"] == "0"


def test_seventy_requests_at_once_on_a_starter_organization(api: Harness) -> None:
    def burst(attempt: int) -> list[testing.Result]:
        token = api.user(f"owner{attempt}@example.com")
        api.organization(token, f"acme{attempt}")
        with ThreadPoolExecutor(10) as pool:
            return list(pool.map(lambda _: api.call("GET", "/api/v1/workflows", token), range(70)))

    answers = one_window(burst)
    check_limited(answers, 60)
    assert sum(a.status_code == 429 for a in answers) == 10


def test_each_organization_has_its_own_count(api: Harness) -> None:
    def burst(attempt: int) -> list[testing.Result]:
        first = api.user(f"first{attempt}@example.com")
        second = api.user(f"second{attempt}@example.com")
        api.organization(first, f"first{attempt}")
        api.organization(second, f"second{attempt}")
        answers = [api.call("GET", "/api/v1/workflows", first) for _ in range(61)]
        return [*answers, api.call("GET", "/api/v1/workflows", second)]

    answers = one_window(burst)
    assert answers[-2].status_code == 429 and answers[-1].status_code == 200


def test_the_plan_sets_the_limit(api: Harness) -> None:
    token = api.user("owner@example.com")
    for plan, limit in (("starter", 60), ("professional", 300), ("team", 600)):
        api.organization(token, f"org-{plan}", plan_type=plan)
        answer = api.call("GET", "/api/v1/workflows", token, headers={"X-Tenant-ID": f"org-{plan}"})
        assert answer.headers["X-RateLimit-Limit"] == str(limit)


def test_unauthenticated_endpoints_are_limited_per_client_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, ip_rate_limit=5) as api:

        def burst(attempt: int) -> list[testing.Result]:
            body = {"email": f"nobody{attempt}@example.com", "password": "wrong password"}
            return [
                api.call("POST", "/api/v1/auth/login", json=body, remote_addr=f"10.0.{attempt}.1")
                for _ in range(7)
            ]

        answers = one_window(burst)
        assert [a.status_code for a in answers] == [401] * 5 + [429] * 2
        for answer in answers[5:]:
            error = assert_error(answer, 429, "RATE_LIMIT_EXCEEDED")
            assert answer.headers["Retry-After"] == str(error["details"]["retry_after"])
            assert answer.headers["X-RateLimit-Limit"] == "5"
            assert answer.headers["X-RateLimit-Remaining"] == "0"
        other = {"email": "x@example.com", "password": "correct horse battery", "full_name": "X"}
        fresh = api.call("POST", "/api/v1/auth/register", json=other, remote_addr="10.9.9.9")
        assert fresh.status_code == 201 and fresh.headers["X-RateLimit-Remaining"] == "4"


def test_ten_failed_logins_per_email_then_429_even_with_the_right_password(
    api: Harness,
) -> None:
    api.register("victim@example.com")
    api.register("bystander@example.com")
    into_window = time.time() % (15 * 60)
    if into_window > 15 * 60 - 20:  # the email's window turns every 15 minutes
        time.sleep(15 * 60 - into_window + 0.05)
    wrong = {"email": "victim@example.com", "password": "not the password"}
    for _ in range(10):
        assert_error(api.call("POST", "/api/v1/auth/login", json=wrong), 401, "INVALID_CREDENTIALS")
    right = {"email": "Victim@Example.com", "password": "correct horse battery"}
    answer = api.call("POST", "/api/v1/auth/login", json=right)
    error = assert_error(answer, 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= error["details"]["retry_after"] <= 15 * 60
    assert answer.headers["Retry-After"] == str(error["details"]["retry_after"])
    assert answer.headers["X-RateLimit-Limit"] == "10"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert int(answer.headers["X-RateLimit-Reset"]) % (15 * 60) == 0
    assert api.login("bystander@example.com")  # other emails are not affected


def test_successful_logins_do_not_count_as_failures(api: Harness) -> None:
    api.register("regular@example.com")
    for _ in range(12):
        assert api.login("regular@example.com")
