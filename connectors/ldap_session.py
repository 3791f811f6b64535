"""One LDAP connection per connector, re-opened after an outage, with errors sorted for the core.

ldap3's synchronous strategy is used from a worker thread (the core calls connectors through
``asyncio.to_thread``); one connector never runs two calls at once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

from ldap3 import ASYNC_STREAM, NONE, SYNC, Connection, Server
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.ciDict import CaseInsensitiveDict
from ldap3.utils.config import get_config_parameter
from ldap3.utils.conv import to_unicode

from streams.contracts import PermanentError, RetriableError
from streams.topology import Forest

log = logging.getLogger(__name__)

_SEARCH_RESULT_ENTRY = 4  # the protocolOp of a searchResEntry (RFC 4511)

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
        # A new Server each time: ldap3 marks a server that refused a connection unusable for
        # several seconds, which would delay the reconnect after an outage.
        # get_info=NONE: values stay as the server sent them (no schema-driven conversion
        # of booleans or timestamps), which is what change events and diffs compare.
        server = Server(self.forest.url, get_info=NONE, connect_timeout=self._timeout)
        connection = Connection(
            server,
            user=self.forest.bind_dn,
            password=self.forest.password.reveal(),
            client_strategy=SYNC,
            raise_exceptions=True,
            receive_timeout=self._timeout,  # ldap3 packs it into a socket option: an int
            auto_bind=False,
        )
        decode_entries_raw_only(connection)
        try:
            connection.bind()
        except BaseException:
            _discard(connection)
            raise
        log.info("ldap connected forest=%s url=%s", self.forest.name, self.forest.url)
        return connection

    def close(self) -> None:
        if self._connection is not None:
            _discard(self._connection)
            self._connection = None


def _discard(connection: Connection) -> None:
    """Unbind, and close the socket even when unbinding fails on a broken connection."""
    try:
        connection.unbind()
    except Exception:  # noqa: BLE001 - the connection is being discarded anyway
        pass
    finally:
        if connection.socket is not None:
            connection.socket.close()


def streaming_connection(forest: Forest, *, timeout: int) -> Connection:
    """An unbound connection for a persistent search: ldap3's receiver thread hands every
    message of the search to its callback as it arrives."""
    return Connection(
        Server(forest.url, get_info=NONE, connect_timeout=timeout),
        user=forest.bind_dn,
        password=forest.password.reveal(),
        client_strategy=ASYNC_STREAM,
        raise_exceptions=True,
        auto_bind=False,
    )


def end_persistent_search(connection: Connection, search, *, timeout: float) -> None:
    """Blocking: abandon a persistent search (if it was sent), unbind, close the socket and wait
    for ldap3's receiver thread; a connection that is already gone is fine."""
    receiver = connection.strategy.receiver
    try:
        if search is not None:
            search.stop(unbind=True)
        else:
            connection.unbind()
    except (ldap_errors.LDAPException, OSError):
        pass  # the connection is already gone
    if connection.socket is not None:
        connection.socket.close()  # ldap3 leaves the socket of a refused connection open
    if receiver is not None:
        receiver.join(timeout)


def decode_entries_raw_only(connection: Connection, *, streaming: bool = False) -> None:
    """Make `connection` decode search entries without formatting their values as text.

    ldap3 builds a schema-formatted copy of every attribute, which the connectors never read
    (they work on ``raw_attributes``): on the push reader that was two thirds of decoding an
    entry (bench/reader_to_kafka.py). A connection that searches the usual way still gets an
    ``attributes`` copy of the raw values, because ldap3's post-processing of a finished search
    (empty attributes, ranged values) edits it alongside ``raw_attributes``; a `streaming`
    (persistent search) connection skips that processing, and the copy. Nothing here reads
    ldap3's ``connection.entries``, which would need the formatted values. Other responses are
    decoded by ldap3 as before."""
    strategy = connection.strategy
    decode_response = strategy.decode_response_fast
    case_insensitive = get_config_parameter("CASE_INSENSITIVE_ATTRIBUTE_NAMES")
    new_dict = CaseInsensitiveDict if case_insensitive else dict

    def decode_entry(message: dict) -> dict:
        if message["protocolOp"] != _SEARCH_RESULT_ENTRY:
            return decode_response(message)
        name, attributes = message["payload"][0][3], message["payload"][1][3]
        raw = new_dict()
        for attribute in attributes:
            type_and_values = attribute[3]
            raw[_text(type_and_values[0][3])] = [bytes(value[3]) for value in type_and_values[1][3]]
        entry = {"type": "searchResEntry", "dn": _text(name), "raw_attributes": raw}
        if not streaming:
            entry["attributes"] = new_dict((name, list(values)) for name, values in raw.items())
        if message["controls"]:
            entry["controls"] = dict(strategy.decode_control_fast(control[3]) for control in message["controls"])
        return entry

    strategy.decode_response_fast = decode_entry


def _text(value: bytes) -> str:
    # As ldap3's to_unicode: DNs and attribute names are UTF-8 by RFC 4511, some servers send
    # other encodings in DNs.
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return to_unicode(value, from_server=True)
