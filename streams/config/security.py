"""The security part of topology.yaml: how idsync encrypts and authenticates its connections.

A forest's ``tls:`` key says how its LDAP connection is protected. Certificates are verified by
default (the system's CA bundle, or ``ca_file``), host name included; turning verification off
takes an explicit ``verify: false``. Only paths are read here: the files are opened by the
connection that needs them, so a renewed certificate is used by the next connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.config.sections import Section, kind_of

TLS_VERSIONS = ("1.2", "1.3")
LDAP_TLS_KEYS = ("starttls", "verify", "ca_file", "cert_file", "key_file", "min_version")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Where a client finds the CA certificates it trusts and its own certificate and key (PEM)."""

    # None: the system's CA bundle.
    ca_file: Path | None = None
    cert_file: Path | None = None
    # None with a cert_file: the key is in the certificate's file.
    key_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapTls:
    """How a forest's connection is encrypted: ldaps:// URLs from the first byte, ldap:// ones
    with StartTLS when `starttls`, or not at all."""

    starttls: bool = False
    # False only by an explicit `verify: false`: then any certificate is accepted (logged as a
    # WARNING at every start).
    verify: bool = True
    files: TlsFiles = TlsFiles()
    min_version: str = "1.2"


def ldap_tls(sec: Section, base_dir: Path | None) -> LdapTls:
    """A forest's `tls` key: absent, the word `starttls`, or a mapping of LDAP_TLS_KEYS."""
    node = sec.node.get("tls")
    url = sec.node.get("url")
    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) else None
    if node is None:
        return LdapTls()
    if node == "starttls":
        node = {"starttls": True}
    elif not isinstance(node, dict):
        sec.error("tls", f"expected starttls or a mapping of {', '.join(LDAP_TLS_KEYS)}, got "
                         + (repr(node) if isinstance(node, str) else kind_of(node)))
        return LdapTls()
    tls = Section(sec.errors, node, sec.at("tls"), LDAP_TLS_KEYS)
    starttls = bool(tls.value("starttls", (bool,), "true or false", False))
    if starttls and scheme == "ldaps":
        tls.error("starttls", "an ldaps:// URL is encrypted from the start; StartTLS is for ldap:// URLs")
    elif not starttls and scheme == "ldap":
        sec.error("tls", "settings for an unencrypted ldap:// URL: use an ldaps:// URL, or starttls: true")
    verify = bool(tls.value("verify", (bool,), "true or false", True))
    files = tls_files(tls, base_dir)
    if not verify and files.ca_file is not None:
        tls.error("ca_file", "unused with verify: false (nothing is verified); remove one of them")
    return LdapTls(starttls=starttls, verify=verify, files=files, min_version=min_version(tls))


def tls_files(sec: Section, base_dir: Path | None) -> TlsFiles:
    """ca_file, cert_file and key_file of `sec`; relative paths resolve against base_dir (the
    topology file's directory). Each must be a file when the topology is loaded."""
    paths = {key: _file(sec, key, base_dir) for key in ("ca_file", "cert_file", "key_file")}
    if sec.given("key_file") and not sec.given("cert_file"):
        sec.error("key_file", "a client key needs its certificate: set cert_file too")
    return TlsFiles(**paths)


def min_version(sec: Section) -> str:
    """`min_version`: 1.2 (the default) or 1.3, written as a number or a string."""
    value: Any = sec.node.get("min_version", "1.2")
    text = str(value) if isinstance(value, (str, float)) else None
    if text not in TLS_VERSIONS:
        sec.error("min_version", f"expected one of {', '.join(TLS_VERSIONS)} (TLS 1.2 or 1.3), got "
                                 + (repr(value) if isinstance(value, (str, float, int)) else kind_of(value)))
        return "1.2"
    return text


def _file(sec: Section, key: str, base_dir: Path | None) -> Path | None:
    name = sec.text(key, None)
    if not name:
        if name == "":
            sec.error(key, "must not be empty")
        return None
    path = base_dir / name if base_dir is not None else Path(name)
    if not path.is_file():
        sec.error(key, f"no such file: {str(path)!r}")
        return None
    return path
