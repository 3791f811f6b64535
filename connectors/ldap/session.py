"""One LDAP connection per connector, re-opened after an outage, with errors sorted for the core.

ldap3's synchronous strategy is used from a worker thread (the core calls connectors through
``asyncio.to_thread``); one connector never runs two calls at once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

from ldap3 import NONE, SYNC, Connection, Server
from ldap3.core import exceptions as ldap_errors
from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER

from connectors.ldap.tls import VerifiedTls, client_certificate_hint, refusal, starttls_refused, warn_once
from connectors.ldap.wire import RawAttributes, decode_response
from streams.config.forests import Forest
from streams.config.security import SecretUnavailable
from streams.contracts import NeedsAttention, PermanentError, RetriableError

log = logging.getLogger(__name__)

NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
# Responses after which more responses to the same request follow.
_PARTIAL_RESPONSES = ("searchResEntry", "searchResRef", "intermediateResponse")

# Result codes that describe the server's condition, not the request: try again later.
_TRANSIENT_RESULTS = (
    ldap_errors.LDAPBusyResult,
    ldap_errors.LDAPUnavailableResult,
    ldap_errors.LDAPAdminLimitExceededResult,
    ldap_errors.LDAPTimeLimitExceededResult,
    ldap_errors.LDAPOtherResult,
)
_CONNECTION_FAILURES = (
    ldap_errors.LDAPCommunicationError,
    ldap_errors.LDAPResponseTimeoutError,
    ldap_errors.LDAPMaximumRetriesError,
    ldap_errors.LDAPBindError,
    OSError,
)


@contextmanager
def sorted_errors(forest: str, *, on_connection_failure: Callable[[], None] | None = None) -> Iterator[None]:
    """LDAP failures inside the block leave as RetriableError or PermanentError."""
    try:
        yield
    except _CONNECTION_FAILURES as exc:
        if on_connection_failure is not None:
            on_connection_failure()
        raise RetriableError(f"forest {forest}: {type(exc).__name__}: {exc}") from exc
    except _TRANSIENT_RESULTS as exc:
        raise RetriableError(f"forest {forest}: {exc.description}: {exc.message}") from exc
    except ldap_errors.LDAPOperationResult as exc:
        raise PermanentError(f"forest {forest}: {exc.description}: {exc.message}") from exc


class LdapSession:
    def __init__(self, forest: Forest, *, timeout: int = 10) -> None:
        self.forest = forest
        self._timeout = timeout
        self._connection: Connection | None = None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bound connection; LDAP failures leave as RetriableError or PermanentError."""
        with sorted_errors(self.forest.name, on_connection_failure=self.close):
            if self._connection is None:
                self._connection = self._open()
            yield self._connection

    def _open(self) -> Connection:
        connection = open_connection(self.forest, timeout=self._timeout)
        log.info("ldap connected forest=%s url=%s tls=%s verify=%s", self.forest.name, self.forest.url,
                 self.forest.encryption, self.forest.tls.verify and self.forest.encryption != "none")
        return connection

    def close(self) -> None:
        if self._connection is not None:
            discard(self._connection)
            self._connection = None


def _password(forest: Forest) -> str:
    """The bind password; a secret gone since the start (a file removed) needs a person."""
    try:
        return forest.password.reveal()
    except SecretUnavailable as error:
        raise NeedsAttention(f"forest {forest.name}: {error}") from None


def open_connection(forest: Forest, *, timeout: int) -> Connection:
    """A bound connection to `forest` (ldap3's synchronous strategy) that decodes search entries
    itself, encrypted as the forest says (connectors/ldap/tls.py). LDAP failures leave as
    ldap3's exceptions; TLS failures as NeedsAttention, before the bind was sent."""
    warn_once(forest)
    # A new Server each time: ldap3 marks a server that refused a connection unusable for
    # several seconds, which would delay the reconnect after an outage.
    # get_info=NONE: values stay as the server sent them (no schema-driven conversion
    # of booleans or timestamps), which is what change events and diffs compare.
    tls = VerifiedTls(forest)
    server = Server(forest.url, get_info=NONE, connect_timeout=timeout, tls=tls)
    connection = Connection(
        server,
        user=forest.bind_dn,
        password=_password(forest),
        client_strategy=SYNC,
        raise_exceptions=True,
        receive_timeout=timeout,  # ldap3 packs it into a socket option: an int
        auto_bind=False,
    )
    decode_entries_fast(connection)
    try:
        _encrypt(connection, forest, tls)
        connection.bind()
    except ldap_errors.LDAPCommunicationError as exc:
        discard(connection)
        if not tls.attempted:
            raise
        raise ldap_errors.LDAPCommunicationError(f"TLS connection closed by the server ({_innermost(exc)}); "
                                                 f"{client_certificate_hint(forest)}") from exc
    except BaseException:
        discard(connection)
        raise
    return connection


def _innermost(exc: BaseException) -> str:
    """The socket's own words under ldap3's wrapping (which nests them in tuples)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc)


def _encrypt(connection: Connection, forest: Forest, tls: VerifiedTls) -> None:
    """Open the connection and finish its TLS handshake (ldaps:// or StartTLS), or raise."""
    try:
        connection.open(read_server_info=False)
    except ldap_errors.LDAPCommunicationError:
        if tls.failure is not None:
            raise refusal(forest, tls.failure, files=tls.files_failed) from None
        raise
    if forest.encryption != "starttls":
        return
    try:
        started = connection.start_tls(read_server_info=False)
    except ldap_errors.LDAPOperationResult as exc:  # the server answered the StartTLS request with an error
        raise starttls_refused(forest, f"{exc.description}: {exc.message}") from None
    except ldap_errors.LDAPException as exc:
        if tls.failure is not None:
            raise refusal(forest, tls.failure, files=tls.files_failed) from None
        if tls.closed is not None:
            raise ldap_errors.LDAPSocketOpenError(str(tls.closed)) from exc
        if isinstance(exc, ldap_errors.LDAPStartTLSError) and not isinstance(exc, OSError):
            raise starttls_refused(forest, str(exc)) from None
        raise
    if tls.closed is not None:  # ldap3 swallowed the failed handshake and returned False
        raise ldap_errors.LDAPSocketOpenError(str(tls.closed))
    if not started or not connection.tls_started:
        raise starttls_refused(forest, connection.last_error or "TLS was not started")


def discard(connection: Connection) -> None:
    """Unbind, and close the socket even when unbinding fails on a broken connection."""
    try:
        connection.unbind()
    except Exception:  # noqa: BLE001 - the connection is being discarded anyway
        pass
    finally:
        if connection.socket is not None:
            connection.socket.close()


def decode_entries_fast(connection: Connection) -> None:
    """Make `connection` decode search entries with connectors.ldap.wire, values raw.

    ldap3 decodes every message into a tree of tuples, then formats each attribute's values as
    text by the schema; the connectors read only ``raw_attributes``. Nothing here reads ldap3's
    ``connection.entries``, which would need the formatted values. Other responses are decoded
    by ldap3 as before; this replaces the loop of ldap3's synchronous strategy that receives a
    request's responses (``SyncStrategy._get_response``, ldap3 2.9.1)."""
    strategy = connection.strategy

    def get_response(message_id: int, timeout: float) -> list | str:
        responses: list = []
        while True:
            messages = strategy.receiving()
            if not messages:
                return SESSION_TERMINATED_BY_SERVER
            for message in messages:
                received_id, response = decode_response(strategy, message)
                if received_id == 0:  # an unsolicited notification (RFC 4511 4.4)
                    if response.get("responseName") == NOTICE_OF_DISCONNECTION:
                        return SESSION_TERMINATED_BY_SERVER
                    raise ldap_errors.LDAPSocketReceiveError("unknown unsolicited notification from server")
                if received_id != message_id:
                    raise ldap_errors.LDAPSocketReceiveError(f"response to message {received_id}, not {message_id}")
                if response["type"] == "searchResEntry":
                    response["attributes"] = _attributes_for_ldap3(connection, response["raw_attributes"])
                responses.append(response)
                if response["type"] not in _PARTIAL_RESPONSES:
                    responses.append(RESPONSE_COMPLETE)
                    return responses

    strategy._get_response = get_response


def _attributes_for_ldap3(connection: Connection, raw: RawAttributes) -> RawAttributes:
    """What ldap3's post-processing of a finished search edits alongside ``raw_attributes``:
    fetching ranged values extends the value lists of both, so they must not share lists;
    adding the empty attributes asked for (and dropping those returned ranged) sets and deletes
    names in both, so they must not be one dict. With neither on, nothing edits it."""
    if connection.auto_range and any(";range=" in name for name in raw):
        return RawAttributes((name, list(values)) for name, values in raw.items())
    if connection.empty_attributes:
        return RawAttributes(raw)
    return raw
