"""A forest configuration for a reader under test or benchmark, pointed at one of the rig's servers."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from streams.config.forests import ChangeCapture, Forest
from streams.config.security import Secret


class DirectoryServer(Protocol):
    url: str
    admin_dn: str
    admin_password: str


def reader_forest(
    server: DirectoryServer, base_dn: str, password_file: Path, *, name: str, mode: str, **capture: float
) -> Forest:
    """A user forest read by the server's admin; the password goes through a file, as in production.

    `capture` overrides change-capture settings (poll_interval_seconds, overlap_seconds, ...).
    """
    password_file.write_text(server.admin_password)
    settings = {"poll_interval_seconds": 0.1, "overlap_seconds": 2.0, "accesslog_base": "cn=accesslog"} | capture
    return Forest(
        name=name,
        role="user",
        url=server.url,
        base_dn=base_dn,
        bind_dn=server.admin_dn,
        password=Secret(file=password_file),
        change_capture=ChangeCapture(mode=mode, **settings),
        contacts_ou=None,
    )
