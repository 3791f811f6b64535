"""The security part of topology.yaml: how idsync encrypts and authenticates its connections.

A forest's ``tls:`` key says how its LDAP connection is protected, a PostgreSQL site store's
``tls:`` key how its database connection is; the kafka section's ``security_protocol``, ``sasl``
and ``tls`` keys how every Kafka client connects. Certificates are verified by default (the
system's CA bundle, or ``ca_file``), host name included; turning verification off (forests and
site stores, never Kafka) takes an explicit ``verify: false``. Secrets come from an
environment variable or a file, read when a connection needs them. Only paths are read here:
the files are opened by the connection that needs them, so a renewed certificate is used by the
next connection.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from streams.config.sections import NOT_EMPTY, Section, TopologyError, choice, kind_of, rule

TLS_VERSIONS = ("1.2", "1.3")
LDAP_TLS_KEYS = ("starttls", "verify", "ca_file", "cert_file", "key_file", "min_version")


class SecretUnavailable(TopologyError):
    """A secret's variable is not set, or its file cannot be read, or it is empty."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """Where a password is found. The value is never stored, so no repr, log or dump can leak it."""

    env: str | None = None
    file: Path | None = None
    # Where topology.yaml names it (e.g. forests[1].password_file), for the operator's messages.
    key: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("a Secret needs exactly one of env or file")

    def reveal(self) -> str:
        """Reads the password now, so a rotated secret is used by the next connection."""
        if self.file is None:
            where, value = f"environment variable {self.env}", os.environ.get(str(self.env))
        else:
            where = f"password file {self.file}"
            try:
                value = self.file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                # Neither str(error) nor the chained error: a decode error carries the file's bytes.
                reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
                raise self._unavailable(f"cannot read {where}: {reason}") from None
        if value is None:
            raise self._unavailable(f"{where} is not set")
        if not (value := value.removesuffix("\n")):
            # An empty password makes an LDAP simple bind anonymous, and that may "succeed".
            raise self._unavailable(f"{where} is empty")
        return value

    def problem(self) -> str | None:
        """Why the secret cannot be read now (with its YAML path), or None when it can."""
        try:
            self.reveal()
        except SecretUnavailable as error:
            return str(error)
        return None

    def _unavailable(self, message: str) -> SecretUnavailable:
        return SecretUnavailable([f"{self.key}: {message}" if self.key else message])


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


POSTGRES_TLS_KEYS = ("verify", "ca_file", "cert_file", "key_file", "min_version")
# libpq's TLS settings, which a site store's url must leave to its `tls:` key.
_LIBPQ_TLS_PARAMS = re.compile(r"(?:ssl\w*|requiressl)", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresTls:
    """How a PostgreSQL site store's connection is protected. By default: TLS required, the
    server's certificate verified against the system's CA bundle (or `files.ca_file`), host name
    included (libpq's sslmode=verify-full)."""

    # False only for a store on this machine (a loopback address or a Unix socket) without a
    # `tls:` key: then nothing is required (libpq's sslmode=prefer).
    required: bool = True
    # False only by an explicit `verify: false`: encrypted, any certificate accepted (a WARNING
    # at every start).
    verify: bool = True
    files: TlsFiles = TlsFiles()
    min_version: str = "1.2"


def postgres_tls(sec: Section, base_dir: Path | None, url: str) -> PostgresTls:
    """A PostgreSQL store's `tls` key (a mapping of POSTGRES_TLS_KEYS); absent, a store on a
    loopback address or a Unix socket requires no TLS, any other verifies its server."""
    for key in _query_keys(url):
        if _LIBPQ_TLS_PARAMS.fullmatch(key):
            sec.error("url", f"must not set {key}; the store's tls: key says how its connection is "
                             "encrypted and verified")
    if not sec.given("tls"):
        return PostgresTls(required=not local_postgres(url))
    tls = sec.child("tls", POSTGRES_TLS_KEYS)
    verify = bool(tls.value("verify", (bool,), "true or false", True))
    files = tls_files(tls, base_dir)
    if not verify and files.ca_file is not None:
        tls.error("ca_file", "unused with verify: false (nothing is verified); remove one of them")
    return PostgresTls(verify=verify, files=files, min_version=min_version(tls))


def local_postgres(url: str) -> bool:
    """Whether every host of a postgresql:// URL is on this machine: a loopback address,
    localhost, or a Unix socket (no host, or a directory path)."""
    netloc = url.split("://", 1)[-1].partition("?")[0].split("/", 1)[0].rpartition("@")[2]
    hosts = [_host_of(part) for part in netloc.split(",")]
    hosts += [value for key, value in parse_qsl(urlsplit(url).query) if key in ("host", "hostaddr")]
    return all(_local_host(unquote(host)) for host in hosts)


def _query_keys(url: str) -> list[str]:
    return [key for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def _local_host(host: str) -> bool:
    if not host or host.startswith("/") or host.lower() == "localhost":
        return True
    for one in host.split(","):
        try:
            if not ipaddress.ip_address(one).is_loopback:
                return False
        except ValueError:
            return False
    return True


def secret(sec: Section, base_dir: Path | None) -> Secret | None:
    """`password_env` or `password_file` of `sec`, exactly one; a relative file is taken relative
    to the topology file, not to wherever idsync was started."""
    env = sec.text("password_env", None, check=_ENV_NAME)
    file = sec.text("password_file", None, check=NOT_EMPTY)
    if sec.given("password_env") == sec.given("password_file") and not sec.broken:
        sec.error(None, "set exactly one of password_env or password_file" + (
            ", not both" if sec.given("password_env") else ""))
    path = None
    if file is not None:
        path = base_dir / file if base_dir is not None else Path(file)
    key = sec.at("password_env" if env is not None else "password_file")
    return Secret(env=env, file=path, key=key) if (env is None) != (path is None) else None


# Echoes no value: it might be a password pasted into the wrong key.
_ENV_NAME = rule(re.compile(r"[A-Za-z_][A-Za-z0-9_]*").fullmatch,
                 "not an environment variable name (letters, digits and '_'); put the variable's name here")


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_SECURITY_KEYS = ("security_protocol", "sasl", "tls")


@dataclass(frozen=True, slots=True, kw_only=True)
class SaslSettings:
    mechanism: str
    username: str
    password: Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How every Kafka client of idsync connects: Kafka's security protocol, SASL credentials
    (SASL_*), and the CA and client certificate for TLS (SSL, SASL_SSL). A TLS connection
    always verifies the broker's certificate and host name."""

    protocol: str = "PLAINTEXT"
    sasl: SaslSettings | None = None
    tls: TlsFiles = TlsFiles()

    @property
    def encrypted(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


def kafka_security(sec: Section, base_dir: Path | None) -> KafkaSecurity:
    """The kafka section's security_protocol, sasl and tls keys."""
    protocol = sec.text("security_protocol", "PLAINTEXT", check=choice(KAFKA_PROTOCOLS)) or "PLAINTEXT"
    sasl = None
    if protocol.startswith("SASL_") and not sec.given("sasl"):
        sec.error("sasl", f"required with security_protocol {protocol}: mechanism, username and "
                          "password_env or password_file")
    elif sec.given("sasl") and not protocol.startswith("SASL_"):
        sec.error("sasl", f"unused with security_protocol {protocol}; SASL needs SASL_SSL or SASL_PLAINTEXT")
    elif sec.given("sasl"):
        sasl = _sasl(sec.child("sasl", ("mechanism", "username", "password_env", "password_file")), base_dir)
    tls = TlsFiles()
    if sec.given("tls") and protocol not in ("SSL", "SASL_SSL"):
        sec.error("tls", f"unused with security_protocol {protocol}; TLS needs SSL or SASL_SSL")
    elif sec.given("tls"):
        tls = tls_files(sec.child("tls", ("ca_file", "cert_file", "key_file")), base_dir)
    return KafkaSecurity(protocol=protocol, sasl=sasl, tls=tls)


def _sasl(sec: Section, base_dir: Path | None) -> SaslSettings:
    return SaslSettings(
        mechanism=sec.text("mechanism", check=choice(SASL_MECHANISMS)),
        username=sec.text("username", check=NOT_EMPTY),
        password=secret(sec, base_dir),
    )


METRICS_AUTH_KEYS = ("username", "password_env", "password_file", "bearer_token_file")


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsAuth:
    """Who may read the metrics endpoint: HTTP basic auth as `username` with the password, or a
    bearer token (the secret is then the token, from a file). Read at each request, so a rotated
    secret applies at once."""

    username: str | None
    secret: Secret

    @property
    def scheme(self) -> str:
        return "Basic" if self.username is not None else "Bearer"


def metrics_auth(sec: Section, base_dir: Path | None) -> MetricsAuth | None:
    """The metrics section's `auth`: username with password_env or password_file, or
    bearer_token_file."""
    if not sec.given("auth"):
        return None
    auth = sec.child("auth", METRICS_AUTH_KEYS)
    if auth.broken:
        return None
    token = _file_name(auth, "bearer_token_file", base_dir)
    if token is not None:
        for key in ("username", "password_env", "password_file"):
            if auth.given(key):
                auth.error(key, "basic auth or a bearer token, not both")
        return MetricsAuth(username=None, secret=Secret(file=token, key=auth.at("bearer_token_file")))
    if not auth.given("username"):
        auth.error(None, "set username with password_env or password_file (basic auth), or bearer_token_file")
        return None
    username = auth.text("username", check=_BASIC_USERNAME)
    password = secret(auth, base_dir)
    return MetricsAuth(username=username, secret=password) if username and password else None


def _file_name(sec: Section, key: str, base_dir: Path | None) -> Path | None:
    """A secret's file, relative to the topology's directory; read when it is needed, not now."""
    name = sec.text(key, None, check=NOT_EMPTY)
    if name is None:
        return None
    return base_dir / name if base_dir is not None else Path(name)


_BASIC_USERNAME = rule(lambda value: value and ":" not in value, "must not be empty or contain ':' (HTTP basic auth)")
