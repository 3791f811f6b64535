"""TLS for a forest's LDAP connections: ldaps:// or StartTLS, the certificate verified.

ldap3 2.9.1's own ``Tls`` verifies nothing by default (``validate=CERT_NONE``), switches the
context's host name check off and compares names itself after the handshake, and takes a
protocol constant for ``version``, not a minimum. So idsync hands ldap3 a ``Tls`` whose
``wrap_socket`` uses a standard-library context built here: CERT_REQUIRED, the host name of the
forest's URL checked during the handshake (IP addresses against the certificate's IP entries),
the system's CA bundle or the forest's ``ca_file``, a minimum TLS version, an optional client
certificate. No LDAP message but the StartTLS request itself is sent before the handshake
succeeded, so a server that fails verification never receives the bind.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from urllib.parse import urlsplit

from ldap3 import Tls

from streams.config.security import LdapTls
from streams.config.forests import Forest
from streams.contracts import NeedsAttention

log = logging.getLogger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# Failures of the connection, not of TLS: the server went away during the handshake.
_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
# Forests warned about in this process: once per start, not once per connection.
_warned: set[str] = set()


def ssl_context(tls: LdapTls) -> ssl.SSLContext:
    """A client context for `tls`, reading its files now (a renewed certificate is used at once)."""
    files = tls.files
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_file)
    context.minimum_version = _VERSIONS[tls.min_version]
    if files.cert_file is not None:
        context.load_cert_chain(files.cert_file, keyfile=files.key_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class VerifiedTls(Tls):
    """ldap3's Tls with the handshake done by a standard-library context. The first TLS failure is
    kept in `failure`: ldap3 re-raises it as a communication error, or drops its type when the
    host name had several addresses."""

    def __init__(self, forest: Forest) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED if forest.tls.verify else ssl.CERT_NONE)
        self._tls = forest.tls
        self._hostname = urlsplit(forest.url).hostname
        self.failure: OSError | None = None
        # The failure was in reading the CA, certificate or key files, not in the handshake.
        self.files_failed = False
        # A handshake was begun: a connection closed from here on was closed during or after TLS.
        self.attempted = False
        # The server closed the connection in the handshake (no alert, no reason given).
        self.closed: ssl.SSLError | None = None

    def wrap_socket(self, connection, do_handshake: bool = False) -> None:
        try:
            context = ssl_context(self._tls)
        except OSError as exc:  # a file missing, unreadable, not PEM, or a key not the certificate's
            if self.failure is None:
                self.failure, self.files_failed = exc, True
            raise
        self.attempted = True
        try:
            connection.socket = context.wrap_socket(
                connection.socket, server_side=False, do_handshake_on_connect=do_handshake,
                server_hostname=self._hostname,
            )
        except ssl.SSLError as exc:
            if isinstance(exc, _TRANSIENT):
                self.closed = exc
            else:
                self.failure = self.failure or exc
            raise


def refusal(forest: Forest, exc: OSError, *, files: bool = False) -> NeedsAttention:
    """The error for a TLS connection that failed for a reason a person must mend; `files`: while
    reading the CA, certificate or key files."""
    if files:
        what = "TLS files not usable"
        reason = str(exc) if isinstance(exc, ssl.SSLError) else f"{exc.strerror}: {exc.filename}"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        what, reason = "certificate not accepted", exc.verify_message or str(exc)
    else:
        what, reason = "TLS handshake failed", str(exc)
    return NeedsAttention(f"forest {forest.name}: {what} ({forest.encryption} to {forest.url}): {reason}; "
                          "the bind was not sent")


def client_certificate_hint(forest: Forest) -> str:
    """What may be wrong when a server closes TLS connections without a word: a server that demands
    a client certificate (slapd's `TLSVerifyClient demand`) ends the handshake (TLS 1.2) or the
    first exchange after it (TLS 1.3) by closing the connection, which looks like an outage.
    Retried all the same: a server restarting looks alike."""
    if forest.tls.files.cert_file is None:
        return "the server may demand a client certificate: tls.cert_file is not set"
    return f"the server may not accept the client certificate {forest.tls.files.cert_file}"


def starttls_refused(forest: Forest, reason: str) -> NeedsAttention:
    return NeedsAttention(f"forest {forest.name}: StartTLS refused by {forest.url}: {reason}; the connection "
                          "was closed without falling back to plaintext, the bind password was not sent")


def warn_once(forest: Forest) -> None:
    """At the first connection of this process: a WARNING when the bind password could be read or
    taken on the way (no verification, or no encryption beyond this machine)."""
    if forest.name in _warned:
        return
    _warned.add(forest.name)
    if forest.encryption != "none" and not forest.tls.verify:
        log.warning("ldap certificate NOT verified forest=%s url=%s (tls.verify: false): anyone on the path "
                    "can pose as the server and receive the bind password", forest.name, forest.url)
    elif forest.encryption == "none" and not _loopback(urlsplit(forest.url).hostname):
        log.warning("ldap connection NOT encrypted forest=%s url=%s: the bind password and every entry travel "
                    "in clear; use an ldaps:// url or tls: starttls", forest.name, forest.url)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
