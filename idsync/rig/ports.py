"""Loopback TCP ports for rig servers."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

from idsync.rig.errors import RigError

_LOOPBACK = "127.0.0.1"
_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int, host: str = _LOOPBACK) -> bool:
    """True when a server could listen on host:port now.

    SO_REUSEADDR mirrors what slapd and the JVM set: TIME_WAIT sockets left by a server we just
    stopped do not block its restart on the same port, but a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def accepts_connections(port: int, host: str = _LOOPBACK) -> bool:
    """True once a server listens on host:port. A plain socket, not an LDAP client: ldap3 leaks
    the socket of a refused connection."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_free_port(port: int, server: str) -> None:
    if not port_is_free(port):
        raise RigError(f"{server} cannot start: port {_LOOPBACK}:{port} is already in use (a leftover server?)")


def free_port() -> int:
    """A free loopback port that this process has not handed out before.

    Chosen below the kernel's ephemeral range, so client connections (which take their local ports
    from that range) cannot occupy it while a server is down between a stop and a restart.
    """
    ephemeral_low, _ = _ephemeral_range()
    low, high = 10000, max(10001, ephemeral_low - 1)
    with _lock:
        for _ in range(200):
            port = random.randint(low, high)
            if port not in _handed_out and port_is_free(port):
                _handed_out.add(port)
                return port
    raise RigError(f"no free loopback port found in {low}-{high}")
