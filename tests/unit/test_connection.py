"""NATS connection settings: flags, environment, validation messages, nats-py options."""

from __future__ import annotations

import argparse
import inspect
import os
import ssl
from pathlib import Path

import pydantic
import pytest
from nats.aio.client import Client

from shared.connection import (
    ConnectionSettingsError,
    NatsSettings,
    add_nats_arguments,
    connect,
    connect_options,
    settings_from_args,
)

ENV_VARS = (
    "FLEET_NATS",
    "FLEET_NATS_USER",
    "FLEET_NATS_PASSWORD",
    "FLEET_NATS_TOKEN",
    "FLEET_NATS_NKEY",
    "FLEET_NATS_CREDS",
    "FLEET_TLS_CA",
    "FLEET_TLS_CERT",
    "FLEET_TLS_KEY",
    "FLEET_TLS_HANDSHAKE_FIRST",
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet")
    add_nats_arguments(parser)
    return parser


def settings(argv: list[str], env: dict[str, str] | None = None) -> NatsSettings:
    return settings_from_args(make_parser().parse_args(argv), environ=env or {})


def settings_error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConnectionSettingsError) as info:
        settings(argv, env)
    return str(info.value)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    names = ("seed.nk", "user.creds", "ca.pem", "cert.pem", "key.pem")
    paths = {name: tmp_path / name for name in names}
    for path in paths.values():
        path.write_text("not really a key\n")
    return paths


# --- flags and environment ---------------------------------------------------------------


def test_defaults_without_flags_or_environment() -> None:
    result = settings([])

    assert result == NatsSettings()
    assert result.servers == ("nats://127.0.0.1:4222",)
    assert (result.user, result.password, result.token, result.nkey_seed, result.creds) == (
        (None,) * 5
    )
    assert result.tls_handshake_first is False


def test_arguments_default_to_none_so_the_environment_can_fill_in() -> None:
    args = make_parser().parse_args([])

    assert all(value is None for value in vars(args).values())


def test_help_names_every_environment_variable_in_a_nats_group() -> None:
    help_text = make_parser().format_help()

    assert "NATS connection:" in help_text
    for env in ENV_VARS:
        assert env in help_text


def test_several_servers_comma_separated() -> None:
    result = settings(["--nats", "nats://a:4222, tls://b:4223,,nats://c"])

    assert result.servers == ("nats://a:4222", "tls://b:4223", "nats://c")


def test_options_from_flags(files: dict[str, Path]) -> None:
    result = settings(
        ["--nats=nats://n1:4222", "--nats-nkey", str(files["seed.nk"]), "--tls-handshake-first"]
    )
    user = settings(["--nats-user", "alice", "--nats-password", "pw"])

    assert result.servers == ("nats://n1:4222",)
    assert result.nkey_seed == files["seed.nk"]
    assert result.tls_handshake_first is True
    assert user.user == "alice"
    assert user.password is not None
    assert user.password.get_secret_value() == "pw"


def test_every_option_from_environment(files: dict[str, Path]) -> None:
    env = {
        "FLEET_NATS": "nats://e1:4222,nats://e2:4222",
        "FLEET_NATS_CREDS": str(files["user.creds"]),
        "FLEET_TLS_CERT": str(files["cert.pem"]),
        "FLEET_TLS_KEY": str(files["key.pem"]),
        "FLEET_TLS_HANDSHAKE_FIRST": "yes",
    }
    # The fake PEM files cannot load; the point here is how values are picked up.
    message = settings_error([], env)
    assert message.startswith("FLEET_TLS_CERT and FLEET_TLS_KEY: cannot load")

    env["FLEET_TLS_CERT"] = env["FLEET_TLS_KEY"] = ""
    result = settings([], env)
    assert result.servers == ("nats://e1:4222", "nats://e2:4222")
    assert result.creds == files["user.creds"]
    assert result.tls_handshake_first is True


def test_user_password_and_token_from_environment() -> None:
    result = settings([], {"FLEET_NATS_USER": "alice", "FLEET_NATS_PASSWORD": "pw"})
    assert result.user == "alice"
    assert result.password is not None
    assert result.password.get_secret_value() == "pw"

    token = settings([], {"FLEET_NATS_TOKEN": "t0k"}).token
    assert token is not None
    assert token.get_secret_value() == "t0k"


def test_flags_win_over_environment() -> None:
    env = {
        "FLEET_NATS": "nats://from-env:4222",
        "FLEET_NATS_TOKEN": "env-token",
        "FLEET_TLS_HANDSHAKE_FIRST": "true",
    }

    result = settings(
        [
            "--nats",
            "nats://from-flag:4222",
            "--nats-token",
            "flag-token",
            "--no-tls-handshake-first",
        ],
        env,
    )

    assert result.servers == ("nats://from-flag:4222",)
    assert result.token is not None
    assert result.token.get_secret_value() == "flag-token"
    assert result.tls_handshake_first is False


def test_empty_environment_variable_counts_as_unset() -> None:
    assert settings([], {"FLEET_NATS": "", "FLEET_NATS_USER": ""}) == NatsSettings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ENV_VARS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("FLEET_NATS", "nats://os-environ:4222")

    result = settings_from_args(make_parser().parse_args([]))

    assert result.servers == ("nats://os-environ:4222",)


def test_secrets_do_not_show_in_repr() -> None:
    result = settings(["--nats-user", "u", "--nats-password", "hunter2"])

    assert "hunter2" not in repr(result)
    assert "hunter2" not in str(result)


# --- validation messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://host:4222", "is not a NATS URL"),
        ("localhost:4222", "is not a NATS URL"),
        ("nats://", "is not a NATS URL"),
        ("nats://host:port", "is not a valid URL"),
    ],
)
def test_rejects_urls_that_are_not_nats(url: str, expected: str) -> None:
    message = settings_error(["--nats", f"nats://ok:4222,{url}"])

    assert message.startswith("--nats: ")
    assert repr(url) in message
    assert expected in message


def test_bad_url_from_environment_names_the_variable() -> None:
    message = settings_error([], {"FLEET_NATS": "redis://cache"})

    assert message.startswith("FLEET_NATS: 'redis://cache' is not a NATS URL")


def test_rejects_an_empty_server_list() -> None:
    assert settings_error(["--nats", " , "]) == "--nats: no server URL given"


def test_rejects_mixing_websocket_and_tcp_urls() -> None:
    message = settings_error(["--nats", "nats://a:4222,ws://b:8080"])

    assert message == "--nats: cannot mix ws:// or wss:// URLs with nats:// or tls:// URLs"


def test_user_without_password() -> None:
    message = settings_error(["--nats-user", "alice"])

    assert message == "--nats-user: set without --nats-password/FLEET_NATS_PASSWORD"


def test_password_without_user_names_where_the_password_came_from() -> None:
    message = settings_error([], {"FLEET_NATS_PASSWORD": "pw"})

    assert message == "FLEET_NATS_PASSWORD: set without --nats-user/FLEET_NATS_USER"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["--nats-user", "u", "--nats-password", "p", "--nats-token", "t"],
            {},
            "--nats-user and --nats-token: give only one way to authenticate",
        ),
        (
            ["--nats-token", "t"],
            {"FLEET_NATS_PASSWORD": "p"},
            "FLEET_NATS_PASSWORD and --nats-token: give only one way to authenticate",
        ),
        (
            ["--nats-token", "t"],
            {"FLEET_NATS_NKEY": "{seed.nk}"},
            "--nats-token and FLEET_NATS_NKEY: give only one way to authenticate",
        ),
        (
            ["--nats-nkey", "{seed.nk}", "--nats-creds", "{user.creds}"],
            {},
            "--nats-nkey and --nats-creds: give only one way to authenticate",
        ),
    ],
)
def test_only_one_way_to_authenticate(
    files: dict[str, Path], argv: list[str], env: dict[str, str], expected: str
) -> None:
    def fill(value: str) -> str:
        return str(files[value[1:-1]]) if value.startswith("{") else value

    message = settings_error([fill(a) for a in argv], {k: fill(v) for k, v in env.items()})

    assert message == expected


def test_tls_cert_without_key_and_the_reverse(files: dict[str, Path]) -> None:
    cert_only = settings_error(["--tls-cert", str(files["cert.pem"])])
    key_only = settings_error([], {"FLEET_TLS_KEY": str(files["key.pem"])})

    assert cert_only == "--tls-cert: set without --tls-key/FLEET_TLS_KEY"
    assert key_only == "FLEET_TLS_KEY: set without --tls-cert/FLEET_TLS_CERT"


@pytest.mark.parametrize(
    ("flag", "env"),
    [
        ("--nats-nkey", "FLEET_NATS_NKEY"),
        ("--nats-creds", "FLEET_NATS_CREDS"),
        ("--tls-ca", "FLEET_TLS_CA"),
        ("--tls-cert", "FLEET_TLS_CERT"),
        ("--tls-key", "FLEET_TLS_KEY"),
    ],
)
def test_missing_file_names_option_and_path(tmp_path: Path, flag: str, env: str) -> None:
    missing = tmp_path / "nope.pem"

    from_flag = settings_error([flag, str(missing)])
    from_env = settings_error([], {env: str(missing)})

    assert from_flag.startswith(f"{flag}: file {missing} does not exist")
    assert from_env.startswith(f"{env}: file {missing} does not exist")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert settings_error(["--nats-creds", str(tmp_path)]) == (
        f"--nats-creds: {tmp_path} is not a regular file"
    )


def test_unreadable_file_names_option_and_path(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: the tests may run as root, who can read a chmod 000 file.
    unreadable = files["seed.nk"]
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: Path(path) != unreadable and real_access(path, mode),
    )

    message = settings_error(["--nats-nkey", str(unreadable)])

    assert message == f"--nats-nkey: file {unreadable} is not readable"


def test_file_paths_expand_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "user.creds").write_text("x")

    assert settings(["--nats-creds", "~/user.creds"]).creds == tmp_path / "user.creds"


def test_bad_ca_file_is_reported_at_validation(files: dict[str, Path]) -> None:
    message = settings_error(["--tls-ca", str(files["ca.pem"])])

    assert message.startswith(f"--tls-ca: cannot load CA certificates from {files['ca.pem']}: ")


def test_bad_boolean_in_environment() -> None:
    message = settings_error([], {"FLEET_TLS_HANDSHAKE_FIRST": "maybe"})

    assert message.startswith("FLEET_TLS_HANDSHAKE_FIRST: ")
    assert "boolean" in message


def test_messages_are_one_line_without_pydantic_noise(files: dict[str, Path]) -> None:
    messages = [
        settings_error(["--nats", "http://x"]),
        settings_error(["--nats-user", "u"]),
        settings_error(["--nats-nkey", "/does/not/exist"]),
        settings_error([], {"FLEET_TLS_HANDSHAKE_FIRST": "maybe"}),
    ]

    for message in messages:
        assert "\n" not in message
        assert "validation error" not in message
        assert "Value error" not in message
        assert "pydantic" not in message


def test_several_problems_are_joined() -> None:
    message = settings_error(["--nats", "http://x", "--nats-nkey", "/does/not/exist"])

    assert message.startswith("--nats: ")
    assert "; --nats-nkey: file /does/not/exist does not exist" in message


# --- the model used directly (client library) ------------------------------------------


def test_model_is_frozen_and_rejects_unknown_fields() -> None:
    model = NatsSettings()
    with pytest.raises(pydantic.ValidationError):
        model.user = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        NatsSettings(server="nats://x:4222")  # type: ignore[call-arg]


@pytest.mark.parametrize("field", ["connect_timeout", "reconnect_wait"])
@pytest.mark.parametrize("value", [0, -1.5])
def test_timeouts_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        NatsSettings.model_validate({field: value})


def test_direct_use_names_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="user: set without password"):
        NatsSettings(user="alice")


# --- nats-py keyword arguments -------------------------------------------------------------


def test_connect_options_are_keywords_nats_py_accepts(files: dict[str, Path]) -> None:
    accepted = set(inspect.signature(Client.connect).parameters)
    options = connect_options(NatsSettings(creds=files["user.creds"]), name="agent-1")

    assert set(options) <= accepted


def test_connect_options_reconnect_forever() -> None:
    options = connect_options(
        NatsSettings(servers=("nats://a:1", "nats://b:2"), connect_timeout=3, reconnect_wait=0.25),
        name="agent-1",
    )

    assert options == {
        "servers": ["nats://a:1", "nats://b:2"],
        "name": "agent-1",
        "connect_timeout": 3.0,
        "reconnect_time_wait": 0.25,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "tls_handshake_first": False,
    }


def test_connect_options_credentials(files: dict[str, Path]) -> None:
    user = connect_options(NatsSettings(user="alice", password=pydantic.SecretStr("pw")))
    token = connect_options(NatsSettings(token=pydantic.SecretStr("t0k")))
    seed = connect_options(NatsSettings(nkey_seed=files["seed.nk"]))
    creds = connect_options(NatsSettings(creds=files["user.creds"]))

    assert (user["user"], user["password"]) == ("alice", "pw")
    assert "token" not in user
    assert token["token"] == "t0k"
    assert seed["nkeys_seed"] == str(files["seed.nk"])
    assert creds["user_credentials"] == str(files["user.creds"])


@pytest.mark.parametrize(
    "settings_kwargs",
    [
        {"servers": ("tls://a:4222",)},
        {"servers": ("wss://a:443",)},
        {"tls_handshake_first": True},
    ],
)
def test_ssl_context_when_tls_is_asked_for(settings_kwargs: dict[str, object]) -> None:
    options = connect_options(NatsSettings.model_validate(settings_kwargs))

    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_no_ssl_context_for_plain_nats() -> None:
    assert "tls" not in connect_options(NatsSettings())


def test_ssl_context_trusts_the_given_ca() -> None:
    bundle = ssl.get_default_verify_paths().cafile
    if bundle is None or not Path(bundle).is_file():
        pytest.skip("no CA bundle on this machine to use as a real PEM file")
    options = connect_options(NatsSettings(tls_ca=Path(bundle)))

    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] > 0


def test_connect_options_reports_tls_files_that_broke_after_validation(
    files: dict[str, Path],
) -> None:
    ca = files["ca.pem"]
    settings = NatsSettings.model_construct(tls_ca=ca)  # skips validation

    with pytest.raises(
        ConnectionSettingsError, match=f"tls_ca: cannot load CA certificates from {ca}"
    ):
        connect_options(settings)


# --- connect() argument checks (the network paths are in tests/integration) ------------


async def test_connect_rejects_unknown_or_sync_callbacks() -> None:
    async def fine() -> None:
        return None

    def sync() -> None:
        return None

    with pytest.raises(TypeError, match="unknown callback 'closed'"):
        await connect(NatsSettings(), closed=fine)
    with pytest.raises(TypeError, match="closed_cb must be an async function"):
        await connect(NatsSettings(), closed_cb=sync)
