"""Who a request counts as, for the submit limit, the quotas and the login limit: an IPv6 /64 is one
client, a client cannot choose its address with X-Forwarded-For, and Fly-Client-IP counts on Fly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask

from tests.conftest import OPERATOR_ACCOUNT, Stack, queued_job_count

BODY = {"task": "crunch_numbers", "params": {"limit": 100}}


def make_app(redis_url: str, **config: Any) -> Flask:
    from app import create_app

    return create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "WTF_CSRF_ENABLED": False,
            "OFFLOAD_SUBMIT_RATE_LIMIT": "2 per minute",
            **OPERATOR_ACCOUNT,
            **config,
        }
    )


def submit(client, peer: str, **headers: str) -> int:
    return client.post("/api/jobs", json=BODY, headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code


def test_addresses_of_one_ipv6_slash_64_share_one_limit(redis_url: str, redis):
    client = make_app(redis_url).test_client()

    first = [submit(client, f"2001:db8:1:2::{n}") for n in (1, 2)]
    third_address = submit(client, "2001:db8:1:2:ffff:ffff:ffff:ffff")
    next_64 = submit(client, "2001:db8:1:3::1")
    mapped_v4 = [submit(client, "::ffff:203.0.113.9"), submit(client, "::ffff:203.0.113.9")]
    same_v4 = submit(client, "203.0.113.9")

    assert first == [202, 202]
    assert third_address == 429  # another address of the same /64 is the same client
    assert next_64 == 202
    assert mapped_v4 == [202, 202] and same_v4 == 429  # IPv4-mapped IPv6 is the IPv4 address
    assert queued_job_count(redis) == 5


def test_a_direct_client_gains_nothing_by_sending_x_forwarded_for(redis_url: str):
    # As fly.toml configures it (one proxy hop), but the client reaches the web directly.
    client = make_app(redis_url, OFFLOAD_TRUSTED_PROXY_COUNT=1).test_client()

    answers = [submit(client, "192.0.2.5", **{"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(4)]

    assert answers == [202, 202, 429, 429]


def test_x_forwarded_for_counts_from_a_trusted_proxy_only(redis_url: str):
    client = make_app(redis_url, OFFLOAD_TRUSTED_PROXY_COUNT=1, OFFLOAD_TRUSTED_PROXIES=["10.0.0.0/8"]).test_client()

    via_proxy = [submit(client, "10.1.2.3", **{"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(4)]
    # Prepending addresses does not help either: only the proxy's own (last) entry counts.
    spoofed = [submit(client, "10.1.2.3", **{"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.77"}) for n in range(3)]

    assert via_proxy == [202] * 4
    assert spoofed == [202, 202, 429]


def test_fly_client_ip_names_the_client_on_fly(redis_url: str):
    client = make_app(redis_url, OFFLOAD_FLY_APP_NAME="offload", OFFLOAD_TRUSTED_PROXY_COUNT=1).test_client()
    fly_proxy = "172.16.5.2"

    distinct = [submit(client, fly_proxy, **{"Fly-Client-IP": f"198.51.100.{n}"}) for n in range(4)]
    # X-Forwarded-For is not what counts on Fly: the same Fly-Client-IP is one client.
    same = [
        submit(client, fly_proxy, **{"Fly-Client-IP": "203.0.113.50", "X-Forwarded-For": f"192.0.2.{n}"})
        for n in range(3)
    ]
    v6 = [submit(client, fly_proxy, **{"Fly-Client-IP": f"2001:db8:9:9::{n}"}) for n in (1, 2, 3)]

    assert distinct == [202] * 4
    assert same == [202, 202, 429]
    assert v6 == [202, 202, 429]


def test_another_header_can_be_named_for_other_proxies(redis_url: str):
    client = make_app(redis_url, OFFLOAD_CLIENT_IP_HEADER="X-Real-IP").test_client()

    answers = [submit(client, "10.0.0.1", **{"X-Real-IP": f"198.51.100.{n}"}) for n in range(3)]

    assert answers == [202] * 3


def test_the_login_limit_counts_a_slash_64_as_one_client(redis_url: str):
    client = make_app(redis_url).test_client()

    def fail_login(peer: str) -> int:
        form = {"username": "operator", "password": "wrong"}
        return client.post("/login", data=form, environ_base={"REMOTE_ADDR": peer}).status_code

    answers = [fail_login(f"2001:db8:5:5::{n}") for n in range(1, 8)]

    assert answers[:5] == [401] * 5 and answers[5:] == [429, 429]
    assert fail_login("2001:db8:5:6::1") == 401


@pytest.fixture
def stack_env() -> dict[str, str]:
    # fly.toml's web settings, run locally: one trusted proxy hop, gunicorn trusting every peer's headers.
    return {"TRUSTED_PROXY_COUNT": "1", "FORWARDED_ALLOW_IPS": "*", "SUBMIT_RATE_LIMIT": "3 per minute"}


@pytest.mark.e2e
def test_gunicorn_as_fly_toml_runs_it_ignores_a_direct_clients_x_forwarded_for(stack: Stack):
    answers = [
        httpx.post(f"{stack.base_url}/api/jobs", json=BODY, headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
        for n in range(5)
    ]

    assert answers == [202, 202, 202, 429, 429]
