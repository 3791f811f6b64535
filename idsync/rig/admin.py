"""A bound admin connection to one of the rig's directory servers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import ldap3

from idsync.rig.errors import RigError


@contextmanager
def admin_connection(url: str, bind_dn: str, password: str, *, server_name: str, **options: Any) -> Iterator[ldap3.Connection]:
    """Bound as `bind_dn` (simple bind); unbound, its socket closed, on leaving the block."""
    connection = ldap3.Connection(ldap3.Server(url, connect_timeout=5), bind_dn, password, **options)
    try:
        if not connection.bind():
            raise RigError(f"{server_name}: admin bind refused: {connection.result['description']}")
        yield connection
    finally:
        connection.unbind()
