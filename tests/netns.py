"""A private LAN of Linux network namespaces, for tests that need several "hosts".

``Lan`` makes one *switch* namespace holding a bridge, and one namespace per host,
each joined to the bridge by a veth pair whose two ends are created directly inside
the namespaces (``ip -n SWITCH link add ... peer name eth0 netns HOST``): no interface
of ours ever exists in the host's own namespace. Each host gets one address in a
random private /24 that no address or route visible on this machine uses, and no
default route, so a process inside can reach the other hosts' addresses and nothing
else: the machine's own interfaces are never touched.

Processes run inside a host with ``ip netns exec NS ...`` (``Host.exec_args``,
``inside``). Python code of the test process itself runs inside a host with
``Host.call`` / ``Host.run``: a fresh thread enters the namespace (``setns`` applies to
the calling thread only) and every socket it, its event loop and the threads it starts
create belongs to that namespace.

Needs root and iproute2; ``unavailable_reason()`` says why it cannot work here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

from taskiq_fleet.natsserver import NatsServer
from tests.processes import FleetProcess

__all__ = ["Host", "Lan", "NamespacedNats", "inside", "unavailable_reason"]

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
PREFIX = "tfleet"
DEVICE = "eth0"
"""Each host's interface name inside its own namespace."""
_IP_TIMEOUT = 10.0


class NetnsError(RuntimeError):
    """An ``ip`` command failed; carries the command and its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise NetnsError with its stderr if it fails and ``check``."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.stdout}")
    return done


def namespaces() -> set[str]:
    """The named network namespaces (``ip netns list``)."""
    out = ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def unavailable_reason() -> str | None:
    """Why namespaces, a bridge and veth pairs cannot be made here; None when they can.

    Probes for real (in a throwaway namespace deleted at once) rather than guessing from
    the uid, since containers may be root without CAP_SYS_ADMIN or without the modules.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not on PATH"
    probe = f"{PREFIX}-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        ip("-n", probe, "link", "set", "va", "master", "br0")
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a bridge and veth pair in a network namespace: {exc}"
    finally:
        ip("netns", "delete", probe, check=False)
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of every address and route on this machine and in every named
    namespace (another run's LAN included)."""
    found: list[ipaddress.IPv4Network] = []
    views: list[tuple[str, ...]] = [()]
    views += [("-n", ns) for ns in sorted(namespaces())]
    for view in views:
        for args in (("-j", "-4", "addr", "show"), ("-j", "-4", "route", "show", "table", "all")):
            done = ip(*view, *args, check=False)
            if done.returncode != 0 or not done.stdout.strip():
                continue  # a namespace deleted meanwhile
            for entry in json.loads(done.stdout):
                texts = [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", ())]
                dst = entry.get("dst")
                if dst and dst != "default":
                    texts.append(dst)
                for text in texts:
                    with contextlib.suppress(ValueError):
                        found.append(ipaddress.IPv4Network(text, strict=False))
    return found


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no address or route in use here."""
    rng = rng or random.Random()
    used = _networks_in_use()
    for _ in range(1000):
        net = ipaddress.IPv4Network(f"10.{rng.randint(16, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(other) for other in used):
            return net
    raise NetnsError("no free 10.x.y.0/24 found")


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Host:
    """One namespace on the LAN: its name, its address, its link."""

    def __init__(self, lan: Lan, role: str, netns: str, address: ipaddress.IPv4Address) -> None:
        self.lan = lan
        self.role = role
        self.netns = netns
        self.address = address
        self.port = ""
        """The bridge-side end of this host's veth pair, in the switch namespace."""

    def __repr__(self) -> str:
        return f"Host({self.role}, {self.netns}, {self.address})"

    def exec_args(self, *command: str) -> list[str]:
        """``command`` run inside this host (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.netns, *command]

    def link(self, *, up: bool) -> None:
        """Set this host's own interface up or down, as if its cable were plugged or
        pulled: the address stays, the peers stay reachable only while it is up."""
        ip("-n", self.netns, "link", "set", "dev", DEVICE, "up" if up else "down")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a new thread that has entered this host's network namespace.

        The namespace is per thread, so the calling thread (and the rest of the process)
        stays where it was; threads ``fn`` starts inherit the namespace.
        """
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
                result.append(fn(*args))
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=target, name=f"in-{self.netns}", daemon=True)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``asyncio.run(make())`` inside this host; ``make`` is called in that thread."""
        return self.call(lambda: asyncio.run(make()))


class Lan:
    """A bridge in a switch namespace, and hosts attached to it; ``close()`` removes all.

    Every name carries a random suffix, so concurrent runs never meet. Stop the
    processes running inside first: a namespace with a process in it outlives its name.
    """

    def __init__(self, subnet: ipaddress.IPv4Network | None = None) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.subnet = subnet or pick_subnet()
        self.switch = f"{PREFIX}-{self.suffix}-sw"
        self.hosts: dict[str, Host] = {}
        self._created: list[str] = []
        self._addresses = self.subnet.hosts()

    def create(self) -> Self:
        self._add_netns(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def add_host(self, role: str) -> Host:
        """A namespace with ``lo`` and ``eth0`` up, ``eth0`` on the bridge, one address."""
        netns = f"{PREFIX}-{self.suffix}-{role}"
        host = Host(self, role, netns, next(self._addresses))
        host.port = f"tf{self.suffix}p{len(self.hosts)}"  # at most 15 characters
        self._add_netns(netns)
        sw = ("-n", self.switch)
        ip(*sw, "link", "add", host.port, "type", "veth", "peer", "name", DEVICE, "netns", netns)
        ip(*sw, "link", "set", host.port, "master", "br0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", DEVICE)
        ip("-n", netns, "link", "set", DEVICE, "up")
        self.hosts[role] = host
        return host

    def _add_netns(self, name: str) -> None:
        self._created.append(name)  # before: a half-made one is deleted too
        ip("netns", "add", name)

    def close(self) -> None:
        """Delete every namespace made (hosts first); their veths and the bridge go with
        them. Raises if one is still listed afterwards."""
        failures = []
        for name in reversed(self._created):
            done = ip("netns", "delete", name, check=False)
            if done.returncode != 0 and name in namespaces():
                failures.append(f"{name}: {done.stderr.strip()}")
        self._created.clear()
        if failures:
            raise NetnsError(f"namespaces left behind: {failures}")

    def leftovers(self) -> list[str]:
        """Anything of this LAN still visible: namespaces, or links in the host's own
        namespace (there should never be any)."""
        left = sorted(n for n in namespaces() if self.suffix in n)
        links = ip("-o", "link", "show", check=False).stdout
        left += [line for line in links.splitlines() if self.suffix in line]
        return left


def inside(host: Host, proc: FleetProcess) -> FleetProcess:
    """``proc`` (not started yet) run inside ``host`` through ``ip netns exec``."""
    proc.args = host.exec_args(*proc.args)
    return proc


class NamespacedNats(NatsServer):
    """The project's ``NatsServer`` (binary, JetStream store, log, stop by PID) run inside
    ``node`` on its address; its readiness probe runs inside the namespace too."""

    def __init__(self, node: Host, base_dir: Path, *, port: int = 4222) -> None:
        super().__init__(base_dir, host=str(node.address), port=port)
        self.node = node

    def command(self) -> list[str]:
        return self.node.exec_args(*super().command())

    def start(self) -> Self:
        return self.node.call(super().start)


@contextlib.contextmanager
def lan_with_nats(
    base_dir: Path, roles: tuple[str, ...]
) -> Iterator[tuple[Lan, NamespacedNats, contextlib.ExitStack]]:
    """A LAN with one host per role and nats-server running on host ``nats``, for a test
    fixture; skips the test where namespaces or nats-server are missing. Callbacks added
    to the yielded stack (a process's ``stop``) run first at the end; then nats-server
    stops, every namespace is deleted, and nothing of the LAN may be left."""
    import pytest

    from taskiq_fleet.natsserver import NatsServerNotFoundError, find_nats_server

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs network namespaces: {reason}")
    try:
        find_nats_server()
    except NatsServerNotFoundError as exc:
        pytest.skip(str(exc))
    with contextlib.ExitStack() as finalizers:
        lan = Lan()
        finalizers.callback(_remove, lan)
        lan.create()
        for role in ("nats", *roles):
            lan.add_host(role)
        server = NamespacedNats(lan.hosts["nats"], base_dir / "nats")
        finalizers.callback(server.stop)
        server.start()
        yield lan, server, finalizers


def _remove(lan: Lan) -> None:
    lan.close()
    left = lan.leftovers()
    assert not left, f"left behind: {left}"
