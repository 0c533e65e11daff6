"""Settings as a deployment gives them: a wrong value stops the app at start, naming the setting,
instead of silently meaning something else (a rate limit switched off, a mail retried for hours)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from offload import Offload, settings
from offload.web import pages_blueprint
from offload.worker import host


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SUBMIT_RATE_LIMIT": "lots"}, "SUBMIT_RATE_LIMIT must be a rate such as '60 per minute'"),
        ({"RESULT_TTL": "-5"}, "RESULT_TTL must be a number of seconds above 0, got -5"),
        ({"FAILURE_TTL": "0"}, "FAILURE_TTL must be a number of seconds above 0"),
        ({"REDIS_URL": "nope"}, "REDIS_URL must start with redis://, rediss://, unix://, got 'nope'"),
        ({"OFFLOAD_REDIS_URL": "http://127.0.0.1:6379/0"}, "REDIS_URL must start with redis://"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(environ, message):
    with pytest.raises(settings.SettingsError, match=re.escape(message)):
        settings.from_environ(environ)


def test_the_forms_a_setting_may_take_are_accepted():
    config = settings.from_environ(
        {"SUBMIT_RATE_LIMIT": "10/second; 100 per hour", "REDIS_URL": "rediss://user:pw@redis.internal:6380/1"}
    )
    assert config["OFFLOAD_SUBMIT_RATE_LIMIT"] == "10/second; 100 per hour"
    settings.from_environ({"REDIS_URL": "unix:///run/redis.sock?db=2"})


def test_the_reference_app_refuses_an_smtp_url_it_could_never_mail_through(redis_url):
    """Before, the app started and every mail of a newsletter failed, each retried for two hours."""
    from app import create_app

    with pytest.raises(settings.SettingsError, match="SMTP_URL must start with one of smtp://"):
        create_app({"OFFLOAD_REDIS_URL": redis_url, "OFFLOAD_SMTP_URL": "http://mail.example.org"})


def test_offloads_blueprints_refuse_an_app_without_a_secret_key(redis_url):
    """Before, the app started and its first form, or a submit (after enqueuing), was a 500."""
    app = Flask("host")
    app.config["OFFLOAD_REDIS_URL"] = redis_url
    Offload(app)

    with pytest.raises(RuntimeError, match=r"need app\.secret_key"):
        app.register_blueprint(pages_blueprint)


def test_flask_offload_worker_help_names_its_own_option(redis_url):
    app = Flask("host")
    app.config["OFFLOAD_REDIS_URL"] = redis_url
    Offload(app)

    bound_before = host._bound

    result = app.test_cli_runner().invoke(args=["offload", "worker", "--help"])

    assert result.exit_code == 0, result.output
    assert "--slots N" in result.output and "--burst" in result.output
    # Help starts no worker: it binds no host app for the workers of this process (it did, and
    # the in-process workers of later tests then ran their jobs for this app).
    assert host._bound is bound_before


def test_to_environ_hands_on_every_setting_but_the_secrets_and_reads_back_the_same():
    """What an on-demand worker is started with (its Machine's config.env on Fly): the settings of the
    process that starts it, read back as they were, and no secret."""
    config = {
        **{settings.key(name): value for name, value in settings.DEFAULTS.items()},
        "OFFLOAD_ENV": "production",
        "SECRET_KEY": "k" * 64,
        "OFFLOAD_ONDEMAND_BACKEND": "fly",
        "OFFLOAD_FLY_API_URL": "http://_api.internal:4280",
        "OFFLOAD_QUEUES": ["urgent", "default"],
        "OFFLOAD_TRUSTED_PROXIES": ["10.0.0.0/8", "fd00::/8"],
        "OFFLOAD_RUN_JOBS_INLINE": False,
        "OFFLOAD_REDIS_QUICK_TIMEOUT": 0.25,
        "OFFLOAD_QUOTA_ACTIVE_JOBS": 0,
        "OFFLOAD_REDIS_URL": "rediss://default:redis-password@redis.internal:6380/0",
        "OFFLOAD_FLY_API_TOKEN": "FlyV1 fly-token",
        "OFFLOAD_METRICS_TOKEN": "metrics-token",
        "OFFLOAD_THIRD_PARTY_TOKEN": "third-party-token",
        "OFFLOAD_OPERATOR_USERNAME": "operator",
        "OFFLOAD_OPERATOR_PASSWORD_HASH": "scrypt:32768:8:1$salt$hash",
        "OFFLOAD_SMTP_URL": "smtps://mailer:smtp-password@smtp.example.com:465",
    }
    settings.validate(config)

    env = settings.to_environ(config)

    secrets = (
        "redis-password",
        "fly-token",
        "metrics-token",
        "third-party-token",
        "operator",
        "$hash",
        "smtp-password",
    )
    assert not [value for value in env.values() if any(secret in value for secret in secrets)]
    assert "SECRET_KEY" not in env and not any(
        name.removeprefix("OFFLOAD_") in settings.SECRET_SETTINGS for name in env
    )
    assert env["OFFLOAD_ONDEMAND_BACKEND"] == "fly" and env["OFFLOAD_QUEUES"] == "urgent,default"
    read_back = settings.from_environ({**env, "SECRET_KEY": "k" * 64})
    left_out = {settings.key(name) for name in settings.SECRET_SETTINGS} | {"OFFLOAD_SMTP_URL"}
    empty = {settings.key(name) for name, value in settings.DEFAULTS.items() if value in ("", [])}
    for name in {settings.key(name) for name in settings.DEFAULTS} - left_out - empty:
        assert read_back[name] == config[name], name
    assert settings.to_environ(config, leave_out={"FLY_API_URL"}).get("OFFLOAD_FLY_API_URL") is None
    assert settings.to_environ({**config, "OFFLOAD_SMTP_URL": "smtp://smtp.internal:25"})["OFFLOAD_SMTP_URL"] == (
        "smtp://smtp.internal:25"
    )


def test_every_setting_named_like_a_secret_is_one():
    """A new token, password or key setting must join SECRET_SETTINGS, or to_environ would hand it on."""
    looks_secret = re.compile(r"TOKEN|PASSWORD|SECRET|USERNAME|_KEY$|_HASH$")
    assert {name for name in settings.DEFAULTS if looks_secret.search(name)} <= settings.SECRET_SETTINGS
    assert set(settings.DEFAULTS) >= settings.SECRET_SETTINGS
