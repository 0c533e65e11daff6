"""The task registry and crunch_numbers, called directly."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, ValidationError

import tasks
from tasks import crunch_numbers, offload

TASKS = offload.tasks
task = offload.task


def primes_below(limit: int) -> list[int]:
    return [n for n in range(2, limit) if all(n % d for d in range(2, int(n**0.5) + 1))]


@pytest.mark.parametrize("limit", [10, 11, 12, 100, 101, 997, 998, 10_000, 65_537])
def test_crunch_numbers_counts_primes_exactly(limit):
    expected = primes_below(limit)

    result = crunch_numbers(limit)

    assert result["primes_below_limit"] == len(expected)
    assert result["largest_prime"] == expected[-1]


def test_crunch_numbers_matches_known_prime_counts():
    assert crunch_numbers(10**7)["primes_below_limit"] == 664_579
    assert crunch_numbers(10**8)["primes_below_limit"] == 5_761_455


def test_crunch_numbers_reports_progress_at_least_every_5_percent(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(tasks, "report_progress", lambda fraction, **_: seen.append(fraction))

    crunch_numbers(1_000_003)

    assert seen[-1] == 1.0
    steps = [b - a for a, b in zip([0.0, *seen], seen, strict=False)]
    assert max(steps) <= 0.05
    assert seen == sorted(seen)


def test_every_task_has_a_timeout_a_title_and_a_configured_queue():
    for registered in TASKS.values():
        assert registered.timeout > 0
        assert registered.title and registered.description
        assert registered.queue in ("high", "default", "low")


def test_a_task_is_one_function_and_one_registration():
    @task(title="Shout", description="Upper-cases text.", queue="high", timeout=5)
    def shout_for_test(text: Annotated[str, Field(min_length=1, max_length=20, title="Text")], times: int = 1) -> str:
        return text.upper() * times

    try:
        registered = TASKS["shout_for_test"]
        assert registered.path.endswith("shout_for_test")
        assert [f["name"] for f in registered.form_fields()] == ["text", "times"]
        assert registered.form_fields()[0]["required"] is True
        assert registered.params.model_validate({"text": "hi"}).model_dump() == {"text": "hi", "times": 1}
        with pytest.raises(ValidationError):
            registered.params.model_validate({"text": "x" * 21})
        with pytest.raises(ValidationError):
            registered.params.model_validate({"text": "hi", "volume": 11})
    finally:
        del TASKS["shout_for_test"]


def test_registering_the_same_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        task(title="Again", description="Twice.")(crunch_numbers)


def test_an_unannotated_parameter_is_refused():
    def untyped(n):
        return n

    with pytest.raises(TypeError, match="needs a type annotation"):
        task(title="Untyped", description="No types.")(untyped)


def test_removing_an_alias_keeps_the_functions_path_known():
    """Two names for one function (test_ondemand's copy of crunch_numbers): removing one keeps the other."""
    import dataclasses

    alias = dataclasses.replace(TASKS["crunch_numbers"], name="crunch_alias")
    TASKS["crunch_alias"] = alias
    del TASKS["crunch_alias"]

    assert TASKS.by_path("tasks.crunch_numbers") is TASKS["crunch_numbers"]
