"""NATS connection settings for ``fleet agent``, ``fleet coordinator`` and the client library.

One definition keeps the entry points agreeing on flags, environment variables and
reconnect behaviour, so an agent started from a systemd unit and a script using the
client library authenticate the same way and fail with the same words.

Agents must outlive a NATS restart, so once connected the client reconnects forever.
The first connection cannot work that way: with unlimited reconnects nats-py's
``connect()`` never returns while the server is down or refuses the credentials. So
``connect`` makes one bounded pass over the servers, turns a failure into a sentence
naming the cause, and only then switches the client to unlimited reconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from nats import errors as nats_errors
from nats.aio.client import Client
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.logging import get_logger
from shared.wire.subjects import Subjects

__all__ = [
    "PREFIX_ENV",
    "ConnectionSettingsError",
    "NatsConnectError",
    "NatsSettings",
    "add_nats_arguments",
    "connect",
    "connect_options",
    "fleet_prefix",
    "inbox_prefix",
    "library_settings",
    "prefix_from_env",
    "settings_from_args",
]

_SCHEMES = ("nats", "tls", "ws", "wss")
_TLS_ERRORS = (ssl.SSLError, nats_errors.SecureConnRequiredError,
               nats_errors.SecureConnWantedError, nats_errors.SecureConnFailedError)  # fmt: skip
_CALLBACKS = frozenset({"error_cb", "disconnected_cb", "reconnected_cb", "closed_cb"})
# nats-py drops a server from the pool once it has failed more than this many times;
# that, plus allow_reconnect=False, is what bounds the first connect.
_FIRST_PASS_RETRIES = 1
_log = get_logger(__name__)
DEFAULT_INBOX = "_INBOX"
_NOT_IN_INBOX = re.compile(r"[^A-Za-z0-9_-]")


class ConnectionSettingsError(ValueError):
    """The NATS options given cannot work; the message names the option and the fix."""


class NatsConnectError(RuntimeError):
    """The first connection to NATS failed; the message says why in plain words."""


@dataclass(frozen=True)
class _Option:
    field: str
    flag: str
    env: str
    metavar: str
    help: str


_OPTIONS = (
    _Option("servers", "--nats", "FLEET_NATS", "URL[,URL...]",
            "NATS server URLs, comma separated; default nats://127.0.0.1:4222"),
    _Option("user", "--nats-user", "FLEET_NATS_USER", "USER", "user name"),
    _Option("password", "--nats-password", "FLEET_NATS_PASSWORD", "PASSWORD",
            "password; others can read flags in ps, so prefer the environment"),
    _Option("token", "--nats-token", "FLEET_NATS_TOKEN", "TOKEN", "authentication token"),
    _Option("nkey_seed", "--nats-nkey", "FLEET_NATS_NKEY", "FILE", "file holding an NKey seed"),
    _Option("creds", "--nats-creds", "FLEET_NATS_CREDS", "FILE", "user credentials (.creds) file"),
    _Option("tls_ca", "--tls-ca", "FLEET_TLS_CA", "FILE", "CA certificates to trust"),
    _Option("tls_cert", "--tls-cert", "FLEET_TLS_CERT", "FILE", "client certificate (PEM)"),
    _Option("tls_key", "--tls-key", "FLEET_TLS_KEY", "FILE", "private key of --tls-cert"),
    _Option("tls_handshake_first", "--tls-handshake-first", "FLEET_TLS_HANDSHAKE_FIRST", "",
            "start TLS before the server's INFO (server option handshake_first)"),
)  # fmt: skip

Namer = Callable[[str], str]


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    if parts.scheme not in _SCHEMES or not parts.hostname:
        return f"{url!r} is not a NATS URL: expected nats://, tls://, ws:// or wss:// and a host"
    return None


class NatsSettings(BaseModel):
    """Validated up front so a typo in a flag fails at startup, not at first reconnect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    nkey_seed: Path | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_handshake_first: bool = False
    connect_timeout: float = Field(default=2.0, gt=0)
    reconnect_wait: float = Field(default=0.5, gt=0)

    @field_validator("servers")
    @classmethod
    def _nats_urls(cls, servers: tuple[str, ...]) -> tuple[str, ...]:
        if not servers:
            raise ValueError("no server URL given")
        for problem in filter(None, map(_url_problem, servers)):
            raise ValueError(problem)
        if len({urlsplit(url).scheme.startswith("ws") for url in servers}) > 1:
            raise ValueError("cannot mix ws:// or wss:// URLs with nats:// or tls:// URLs")
        return servers

    @field_validator("nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        if not path.exists():
            raise ValueError(f"file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise ValueError(f"file {path} is not readable")
        return path

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        # Name options the way the caller spelled them: flag or environment variable.
        labels: Mapping[str, str] = (info.context or {}).get("labels", {})
        name: Namer = lambda field: labels.get(field, field)  # noqa: E731
        user = "user" if self.user is not None else "password"
        auth = {user: self.user or self.password, "token": self.token,
                "nkey_seed": self.nkey_seed, "creds": self.creds}  # fmt: skip
        methods = [name(field) for field, value in auth.items() if value is not None]
        if len(methods) > 1:
            raise ValueError(f"{' and '.join(methods)}: give only one way to authenticate")
        for first, second in (("user", "password"), ("tls_cert", "tls_key")):
            has = {f: getattr(self, f) is not None for f in (first, second)}
            if has[first] != has[second]:
                given, missing = (first, second) if has[first] else (second, first)
                raise ValueError(f"{name(given)}: set without {name(missing)}")
        _ssl_context(self, name)
        return self


def _ssl_context(settings: NatsSettings, name: Namer = str) -> ssl.SSLContext | None:
    wants_tls = (
        settings.tls_handshake_first
        or any(p is not None for p in (settings.tls_ca, settings.tls_cert, settings.tls_key))
        or any(urlsplit(url).scheme in ("tls", "wss") for url in settings.servers)
    )
    if not wants_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectionSettingsError(
            f"{name('tls_ca')}: cannot load CA certificates from {settings.tls_ca}: {exc}"
        ) from exc
    if settings.tls_cert is not None:
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConnectionSettingsError(
                f"{name('tls_cert')} and {name('tls_key')}: cannot load them as a client "
                f"certificate and its key: {exc}"
            ) from exc
    return context


def add_nats_arguments(parser: argparse.ArgumentParser) -> None:
    """Defaults stay None so ``settings_from_args`` can tell "not given" from a value."""
    group = parser.add_argument_group("NATS connection")
    for opt in _OPTIONS:
        kwargs: dict[str, Any] = {"dest": f"nats_{opt.field}", "default": None,
                                  "help": f"{opt.help} (env {opt.env})"}  # fmt: skip
        if opt.field == "tls_handshake_first":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = opt.metavar
        group.add_argument(opt.flag, **kwargs)


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> NatsSettings:
    """Flags win over the environment; an empty environment variable counts as unset.

    Booleans from the environment are parsed by pydantic (1/0, true/false, yes/no, on/off).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for opt in _OPTIONS:
        value: Any = getattr(args, f"nats_{opt.field}", None)
        labels[opt.field] = opt.flag
        if value is None and env.get(opt.env):
            labels[opt.field] = opt.env
            value = env[opt.env]
        elif value is None:
            labels[opt.field] = f"{opt.flag}/{opt.env}"
            continue
        if opt.field == "servers":
            value = tuple(url.strip() for url in str(value).split(",") if url.strip())
        values[opt.field] = value
    try:
        return NatsSettings.model_validate(values, context={"labels": labels})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = f"{labels.get(str(error['loc'][0]), error['loc'][0])}: " if error["loc"] else ""
            problems.append(where + error["msg"].removeprefix("Value error, "))
        raise ConnectionSettingsError("; ".join(problems)) from None


def library_settings(
    nats: str | NatsSettings | None = None, environ: Mapping[str, str] | None = None
) -> NatsSettings:
    """What ``FleetBroker`` and ``CoordinatorClient.connect`` connect with, read as the
    ``fleet`` commands read theirs: a URL string given is their ``--nats`` and wins over
    ``FLEET_NATS``; user, password, token, NKey, creds and TLS come from their ``FLEET_*``
    variables. ``NatsSettings`` given are used as they are."""
    if isinstance(nats, NatsSettings):
        return nats
    return settings_from_args(argparse.Namespace(nats_servers=nats), environ)


PREFIX_ENV = "FLEET_PREFIX"
DEFAULT_PREFIX = "fleet"


def prefix_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The subject prefix when none is given, for every entry point: ``FLEET_PREFIX``
    (empty counts as unset, as for the NATS variables), else ``fleet``."""
    env = os.environ if environ is None else environ
    return env.get(PREFIX_ENV) or DEFAULT_PREFIX


def fleet_prefix(given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``given``, else ``prefix_from_env``; a bad one is a ``ConnectionSettingsError`` naming
    where it came from."""
    prefix = prefix_from_env(environ) if given is None else given
    try:
        Subjects(prefix)
    except ValueError as exc:
        raise ConnectionSettingsError(
            f"{PREFIX_ENV if given is None else 'prefix'}: {exc}"
        ) from None
    return prefix


def connect_options(settings: NatsSettings, *, name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``, set up to reconnect forever."""
    options: dict[str, Any] = {
        "servers": list(settings.servers),
        "name": name,
        "connect_timeout": settings.connect_timeout,
        "reconnect_time_wait": settings.reconnect_wait,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "tls_handshake_first": settings.tls_handshake_first,
    }
    if settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value()
    if settings.token is not None:
        options["token"] = settings.token.get_secret_value()
    if settings.nkey_seed is not None:
        options["nkeys_seed"] = str(settings.nkey_seed)
    if settings.creds is not None:
        options["user_credentials"] = str(settings.creds)
    context = _ssl_context(settings)
    if context is not None:
        options["tls"] = context
    return options


def inbox_prefix(settings: NatsSettings) -> str:
    """The inbox prefix of a connection that logs in as ``settings.user``: ``_INBOX_<user>``,
    with any character other than letters, digits, ``_`` and ``-`` written as ``_``.

    Replies, JetStream acknowledgements and payload reads come to the connection's
    inboxes; with a prefix per user, the server can let each user read only its own
    (deploy/nats/accounts.conf). Without a user name (token, NKey, creds, no login) it is
    nats-py's ``_INBOX``.
    """
    if settings.user is None:
        return DEFAULT_INBOX
    return f"{DEFAULT_INBOX}_{_NOT_IN_INBOX.sub('_', settings.user)}"


class _Relay:
    """Stands between nats-py and the caller's callbacks.

    During the first connect, errors are collected to explain the failure and nothing is
    forwarded: the caller gets one NatsConnectError instead of a stream of callback
    noise, and no closed_cb for a connection it never had.
    """

    def __init__(self, callbacks: Mapping[str, Any]) -> None:
        self.connected = False
        self.seen: list[Exception] = []
        self._callbacks = callbacks

    async def error_cb(self, exc: Exception) -> None:
        if not self.connected:
            self.seen.append(exc)
        elif (callback := self._callbacks.get("error_cb")) is not None:
            await callback(exc)
        else:
            _log.warning("nats_connection_error", error=str(exc), error_type=type(exc).__name__)

    def forwarder(self, name: str) -> Callable[[], Awaitable[None]] | None:
        callback = self._callbacks.get(name)
        if callback is None:
            return None

        async def forward() -> None:
            if self.connected:
                await callback()

        return forward


def _explain(exc: Exception, seen: list[Exception], settings: NatsSettings) -> str:
    where = ", ".join(settings.servers)
    everything = [*seen, exc]
    if any(
        isinstance(e, nats_errors.AuthorizationError) or "authorization violation" in str(e).lower()
        for e in everything
    ):
        return (
            f"NATS refused the credentials (authorization violation) at {where}: check the "
            "user/password, token, NKey or creds file"
        )
    for e in everything:
        if isinstance(e, _TLS_ERRORS):
            return f"TLS with NATS at {where} failed: {e}"
    cause = seen[-1] if isinstance(exc, nats_errors.NoServersError) and seen else exc
    if isinstance(cause, TimeoutError):
        return f"cannot reach NATS at {where}: no answer within {settings.connect_timeout:g}s"
    if isinstance(cause, OSError | nats_errors.NoServersError):
        return f"cannot reach NATS at {where}: {cause}"
    return f"connecting to NATS at {where} failed: {type(cause).__name__}: {cause}"


async def connect(
    settings: NatsSettings,
    *,
    name: str | None = None,
    inbox_prefix: str = DEFAULT_INBOX,
    **callbacks: Any,
) -> Client:
    """Connect once with a bounded pass, then hand back a client that reconnects forever.

    ``callbacks`` are nats-py's ``error_cb``, ``disconnected_cb``, ``reconnected_cb`` and
    ``closed_cb`` (coroutine functions); they only start firing once connected.
    ``inbox_prefix`` is where replies come (``inbox_prefix(settings)`` for one per user).
    """
    for key, callback in callbacks.items():
        if key not in _CALLBACKS:
            raise TypeError(f"unknown callback {key!r}: expected one of {sorted(_CALLBACKS)}")
        if not inspect.iscoroutinefunction(callback):
            raise TypeError(f"{key} must be an async function")
    options = connect_options(settings, name=name)
    relay = _Relay(callbacks)
    client = Client()
    try:
        await client.connect(
            **{**options, "allow_reconnect": False, "max_reconnect_attempts": _FIRST_PASS_RETRIES},
            inbox_prefix=inbox_prefix,
            error_cb=relay.error_cb,
            disconnected_cb=relay.forwarder("disconnected_cb"),
            reconnected_cb=relay.forwarder("reconnected_cb"),
            closed_cb=relay.forwarder("closed_cb"),
        )
    except BaseException as exc:
        # Also on cancellation, so no half-open socket outlives the failed attempt.
        with contextlib.suppress(Exception):
            await asyncio.shield(client.close())
        if isinstance(exc, ImportError):
            raise NatsConnectError(
                f"NKey and .creds authentication need the 'nkeys' package ({exc})"
            ) from exc
        if isinstance(exc, Exception):
            raise NatsConnectError(_explain(exc, relay.seen, settings)) from exc
        raise
    client.options["allow_reconnect"] = options["allow_reconnect"]
    client.options["max_reconnect_attempts"] = options["max_reconnect_attempts"]
    relay.connected = True
    return client
