"""One reading of the ``FLEET_*`` settings for every entry point: the ``fleet`` commands,
``FleetBroker`` and ``CoordinatorClient`` (explicit arguments win over the environment)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from shared.connection import ConnectionSettingsError, NatsSettings
from taskiq_fleet import CoordinatorClient, FleetBroker
from taskiq_fleet.cli import build_parser

NOWHERE = "nats://127.0.0.1:1"  # nothing listens: a test that connected would fail


def library_settings(nats: str | NatsSettings | None, env: dict[str, str]) -> NatsSettings:
    from shared.connection import library_settings  # here: the base commit has none

    return library_settings(nats, env)


def fleet_prefix(given: str | None, env: dict[str, str]) -> str:
    from shared.connection import fleet_prefix  # here: the base commit has none

    return fleet_prefix(given, env)


def test_everything_from_the_environment() -> None:
    env = {"FLEET_NATS": "nats://a:4222, nats://b:4222", "FLEET_NATS_TOKEN": "t0k"}
    settings = library_settings(None, env)
    assert settings.servers == ("nats://a:4222", "nats://b:4222")
    assert settings.token == SecretStr("t0k")


def test_a_url_given_wins_and_credentials_still_come_from_the_environment() -> None:
    env = {"FLEET_NATS": "nats://env:4222", "FLEET_NATS_USER": "u", "FLEET_NATS_PASSWORD": "p"}
    settings = library_settings("nats://given:4222", env)
    assert settings.servers == ("nats://given:4222",)
    assert settings.user == "u"


def test_settings_given_are_used_as_they_are() -> None:
    given = NatsSettings(servers=("nats://given:4222",))
    assert library_settings(given, {"FLEET_NATS_TOKEN": "t0k"}) is given


@pytest.mark.parametrize(
    ("given", "env", "prefix"),
    [
        (None, {}, "fleet"),
        (None, {"FLEET_PREFIX": ""}, "fleet"),  # empty counts as unset, as for FLEET_NATS
        (None, {"FLEET_PREFIX": "blue"}, "blue"),
        ("red", {"FLEET_PREFIX": "blue"}, "red"),
    ],
)
def test_the_prefix(given: str | None, env: dict[str, str], prefix: str) -> None:
    assert fleet_prefix(given, env) == prefix


@pytest.mark.parametrize(("given", "where"), [(None, "FLEET_PREFIX"), ("Bad Prefix", "prefix")])
def test_a_bad_prefix_is_one_line_naming_where_it_came_from(given: str | None, where: str) -> None:
    with pytest.raises(ConnectionSettingsError) as caught:
        fleet_prefix(given, {"FLEET_PREFIX": "Bad Prefix"})
    assert str(caught.value).startswith(f"{where}: invalid subject prefix 'Bad Prefix'")
    assert "\n" not in str(caught.value)


async def test_broker_and_client_refuse_a_bad_environment_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_NATS", NOWHERE)
    monkeypatch.setenv("FLEET_PREFIX", "Bad Prefix")
    with pytest.raises(ConnectionSettingsError, match=r"^FLEET_PREFIX: invalid subject prefix"):
        await CoordinatorClient.connect()
    with pytest.raises(ConnectionSettingsError, match=r"^FLEET_PREFIX: invalid subject prefix"):
        await FleetBroker().startup()
    monkeypatch.setenv("FLEET_PREFIX", "blue")
    monkeypatch.setenv("FLEET_NATS_USER", "only-a-user")
    with pytest.raises(ConnectionSettingsError, match="FLEET_NATS_USER: set without"):
        await FleetBroker().startup()


@pytest.mark.parametrize("command", [["agent", "app:broker"], ["coordinator"], ["up"], ["runs"]])
def test_every_command_reads_the_prefix_alike(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_PREFIX", "")
    parser, _ = build_parser()
    assert parser.parse_args(command).prefix == "fleet"
