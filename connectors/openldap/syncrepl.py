"""OpenLDAP push reader: RFC 4533 refreshAndPersist on the accesslog database (mode ``accesslog-sync``).

The reader keeps one sync search open on ``cn=accesslog``. slapd's syncprov there runs in delta
mode (``syncprov-nopresent`` and ``syncprov-reloadhint``): after the refresh from a cookie it
pushes every new ``auditWriteObject`` entry, each with a Sync State control whose cookie is that
entry's CSN. The accesslog overlay serialises logged writes and contextCSN never passes a write
still in flight, so entries arrive in CSN order (measured: no inversion under 8 concurrent
writers) and the cookie of the last entry of a batch covers exactly that batch; it becomes the
batch's position, saved only once the batch is in Kafka. Each change carries its record's CSN
(``entryCSN``) as its own position, in commit order like the stream; not ``reqStart``, the time
the write arrived, which two clients writing one object at once can get the other way round.

Starting without a position, the cookie is taken before the snapshot: a refreshOnly search of
just the accesslog suffix entry returns no entry and a Sync Done whose cookie is the log's
contextCSN. No change is lost between the two: a write's log record is added after the write
committed, so a write the cookie covers was committed before the snapshot began and the snapshot
shows it; every later write's record is newer than the cookie and is pushed once the sync starts
from it. A write in between is seen twice, which is harmless because the snapshot's changes carry
the poll reader's snapshot position (the time before the cookie, minus the overlap window), older
than the record's CSN as long as the clocks of idsync and slapd agree within that window, as the
poll reader also assumes. slapd's cookies hold only the CSN, not the search, so that
cookie also serves the subtree search.

The search's messages arrive on a thread of its own (connectors.ldap.persistent). They cross to
asyncio through a bounded inbox: when it is full that thread waits, so a large backlog is held
back by TCP instead of memory. A connection that drops ends that thread; read() notices within a
fraction of a second and raises RetriableError, and the next read() reconnects from the
position it is given.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass

from ldap3 import BASE, DEREF_NEVER, SUBTREE
from ldap3.core.exceptions import LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars

from connectors.ldap.persistent import PersistentSearch
from connectors.ldap.scope import RECORD_ATTRIBUTES, ForestScope
from connectors.ldap.session import LdapSession, sorted_errors
from connectors.openldap.accesslog import record_csn, snapshot_position
from connectors.openldap.rfc4533 import (
    E_SYNC_REFRESH_REQUIRED,
    SYNC_DONE_OID,
    SYNC_INFO_OID,
    SYNC_STATE_OID,
    SyncMode,
    SyncProtocolError,
    SyncState,
    SyncStateControl,
    decode_sync_done,
    decode_sync_info,
    decode_sync_state,
    sync_request_control,
)
from streams.config.forests import Forest
from streams.contracts import PermanentError, ReadBatch, RejectedRecord, RetriableError
from streams.events import DirectoryChange

log = logging.getLogger(__name__)

_RECORD_FILTER = "(&(objectClass=auditWriteObject)(reqResult=0))"
# Results of a sync search that mean: the cookie cannot be resumed from, read a snapshot instead.
_START_OVER = {
    E_SYNC_REFRESH_REQUIRED: "cookie too old",
    53: "directory older than the cookie (restored from a backup?)",  # unwillingToPerform
}
# How soon a dropped connection is noticed while no message arrives.
_LIVENESS_SECONDS = 0.2
# Messages held for the reader before the receiving thread waits.
_INBOX_CAPACITY = 10_000


class AccesslogSyncReader:
    mode = "accesslog-sync"

    def __init__(
        self, forest: Forest, *, page_size: int = 1000, batch_size: int = 2000, idle_seconds: float = 1.0
    ) -> None:
        self.forest = forest.name
        self._config = forest
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        self._scope = ForestScope(forest, self._session, page_size=page_size)
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._stream: _SyncStream | None = None
        # The position of the last batch returned, and whether that batch held changes after its
        # newest cookie: read(position) continues the open stream only from exactly there.
        self._returned: str | None = None
        self._uncovered = False

    async def read(self, position: str | None) -> ReadBatch:
        if position is None:
            return await self._snapshot()
        loop = asyncio.get_running_loop()
        if not self._continues(position, loop):
            if await asyncio.to_thread(self._log_went_on_without, position):
                return await self._snapshot()
            await self._start(position, loop)
        messages = await self._next_messages()
        if messages and messages[0]["type"] == "searchResDone":
            return await self._ended(messages[0])
        # Taken from the stream, not returned yet: should decoding fail (a move into scope reads
        # the entry) or this read be cancelled, the next read restarts from `position`.
        self._uncovered = True
        received = await asyncio.to_thread(self._decode, messages)
        self._returned = _position(received.cookie) if received.cookie else position
        self._uncovered = received.uncovered
        return ReadBatch(changes=received.changes, rejected=received.rejected, position=self._returned)

    async def close(self) -> None:
        await self._stop_stream()
        await asyncio.to_thread(self._session.close)

    def _continues(self, position: str, loop: asyncio.AbstractEventLoop) -> bool:
        # Anything else (first read, a retry after a failed publish, changes returned beyond
        # their cookie) restarts from `position`: the server re-sends what came after it.
        return (
            self._stream is not None
            and self._stream.loop is loop
            and position == self._returned
            and not self._uncovered
        )

    async def _start(self, position: str, loop: asyncio.AbstractEventLoop) -> None:
        await self._stop_stream()
        # Held before it opens, so that close() reaches a stream whose open() outlives a
        # cancelled read; no position is continued until it is open.
        self._stream = stream = _SyncStream(self._config, cookie=_cookie(position), loop=loop)
        self._returned, self._uncovered = None, False
        self._scope.forget()
        try:
            await asyncio.to_thread(stream.open)
        except Exception:
            self._stream = None
            raise
        self._returned = position
        log.info("sync started forest=%s accesslog=%s position=%s", self.forest, self._capture.accesslog_base, position)

    async def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)

    async def _next_messages(self) -> list[dict]:
        """What arrived, up to a batch; nothing after idle_seconds of silence."""
        stream = self._stream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_seconds
        while True:
            # Cleared before looking, so a message that lands after the look wakes the wait.
            stream.wake.clear()
            messages = stream.take(self._batch_size)
            if messages:
                return messages
            if not stream.alive:
                await self._stop_stream()
                raise RetriableError(f"forest {self.forest}: sync connection to {self._config.url} lost")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(stream.wake.wait(), min(remaining, _LIVENESS_SECONDS))
            except TimeoutError:
                pass

    async def _ended(self, done: dict) -> ReadBatch:
        """The server ended the sync search."""
        await self._stop_stream()
        if done["result"] in _START_OVER:
            log.warning(
                "sync cannot resume, starting over with a snapshot forest=%s position=%s reason=%r message=%r",
                self.forest,
                self._returned,
                _START_OVER[done["result"]],
                done["message"],
            )
            return await self._snapshot()
        if done["result"] == 0:
            raise RetriableError(f"forest {self.forest}: the server ended the sync search")
        with sorted_errors(self.forest):
            raise LDAPOperationResult(
                result=done["result"], description=done["description"], message=done["message"]
            )

    async def _snapshot(self) -> ReadBatch:
        await self._stop_stream()
        batch = await asyncio.to_thread(self._read_snapshot)
        self._returned, self._uncovered = batch.position, False
        return batch

    def _read_snapshot(self) -> ReadBatch:
        position = snapshot_position(self._capture.overlap_seconds)
        cookie = self._log_cookie()
        changes, rejected = self._scope.snapshot(position)
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=cookie, is_snapshot=True)

    def _log_cookie(self) -> str:
        """The accesslog's current cookie, from a refreshOnly sync of its suffix entry alone."""
        with self._session.connection() as connection:
            connection.search(
                self._capture.accesslog_base,
                _RECORD_FILTER,
                search_scope=BASE,
                dereference_aliases=DEREF_NEVER,
                attributes=["1.1"],
                controls=[sync_request_control(SyncMode.REFRESH_ONLY)],
            )
            control = (connection.result.get("controls") or {}).get(SYNC_DONE_OID)
        try:
            cookie = decode_sync_done(control["value"]).cookie if control else None
        except SyncProtocolError as exc:
            raise PermanentError(f"forest {self.forest}: {exc}") from None
        if not _has_state(cookie):
            raise PermanentError(
                f"forest {self.forest}: {self._capture.accesslog_base} returned no sync cookie "
                "(is the syncprov overlay configured on the accesslog database?)"
            )
        return _position(cookie)

    def _log_went_on_without(self, position: str) -> bool:
        """Whether the log lacks the record `position` names yet moved past it: the directory was
        restored from a backup taken before that record (or the log purged past it), and what
        the reader published since may be undone. slapd notices a restore only while its state
        is older than the cookie (result 53); a backup taken while it ran (its contextCSN is
        made anew at start) or a write after the restore hides it from slapd.

        A cookie taken from the log's contextCSN rather than a record (a snapshot's) gives a
        false alarm only when that contextCSN was made anew at a start and a write followed:
        one needless snapshot."""
        csns = _csns(_cookie(position))
        if not csns:
            return False
        wanted = "".join(f"(entryCSN={escape_filter_chars(csn)})" for csn in csns)
        base = self._capture.accesslog_base
        with self._session.connection() as connection:
            connection.search(
                base, f"(|{wanted})", search_scope=SUBTREE, dereference_aliases=DEREF_NEVER, attributes=["1.1"]
            )
            if any(entry.get("type") == "searchResEntry" for entry in connection.response):
                return False
            connection.search(
                base, "(objectClass=*)", search_scope=BASE, dereference_aliases=DEREF_NEVER, attributes=["contextCSN"]
            )
            context = [
                bytes(value).decode()
                for entry in connection.response
                for value in entry.get("raw_attributes", {}).get("contextCSN", ())
            ]
        if not context or max(context) <= max(csns):
            return False
        log.warning(
            "accesslog went on without the reader's position (restored from a backup?), starting over with a snapshot "
            "forest=%s position=%s log_csn=%s",
            self.forest,
            position,
            max(context),
        )
        return True

    def _decode(self, messages: list[dict]) -> _Received:
        """Blocking (a move into scope reads the entry): run in a worker thread."""
        changes: list[DirectoryChange] = []
        rejected: list[RejectedRecord] = []
        cookie, uncovered = None, False
        for message in messages:
            if message["type"] == "searchResEntry":
                state = self._sync_state(message)
                if state is None or state.state is SyncState.ADD:
                    raw = message["raw_attributes"]
                    outcome = self._scope.record_change(raw, record_csn(raw) or message["dn"])
                    if isinstance(outcome, RejectedRecord):
                        rejected.append(outcome)
                        uncovered = True
                    elif outcome is not None:
                        changes.append(outcome)
                        uncovered = True
                # Other states say a log record was purged: nothing happened in the directory.
                if state is not None and _has_state(state.cookie):
                    cookie, uncovered = state.cookie, False
            elif message["type"] == "intermediateResponse" and message.get("responseName") == SYNC_INFO_OID:
                try:
                    info = decode_sync_info(message.get("responseValue") or b"")
                except SyncProtocolError as exc:
                    log.warning("sync info ignored forest=%s reason=%r", self.forest, str(exc))
                    continue
                if _has_state(info.cookie):
                    cookie, uncovered = info.cookie, False
        return _Received(
            changes=tuple(self._scope.publishable(changes)), rejected=tuple(rejected), cookie=cookie, uncovered=uncovered
        )

    def _sync_state(self, message: dict) -> SyncStateControl | None:
        """None when unreadable: the record itself may still be good, and without a cookie it is
        simply not covered yet."""
        control = (message.get("controls") or {}).get(SYNC_STATE_OID)
        try:
            if control is None:
                raise SyncProtocolError("entry without a Sync State control")
            return decode_sync_state(control["value"])
        except SyncProtocolError as exc:
            log.warning("sync state unreadable forest=%s dn=%r reason=%r", self.forest, message.get("dn"), str(exc))
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Received:
    changes: tuple[DirectoryChange, ...]
    rejected: tuple[RejectedRecord, ...]
    # The newest cookie among the messages, and whether changes came after it.
    cookie: bytes | None
    uncovered: bool


class _SyncStream:
    """One refreshAndPersist search, its messages held in a bounded inbox for the reader."""

    def __init__(self, forest: Forest, *, cookie: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wake = asyncio.Event()
        self._messages: deque[dict] = deque()
        self._room = threading.Condition()
        self._closed = False
        self._search = PersistentSearch(
            forest,
            base=forest.change_capture.accesslog_base,
            search_filter=_RECORD_FILTER,
            attributes=RECORD_ATTRIBUTES,
            controls=[sync_request_control(SyncMode.REFRESH_AND_PERSIST, cookie)],
            on_message=self._receive,
        )

    @property
    def alive(self) -> bool:
        return self._search.alive

    def open(self) -> None:
        """Blocking: connect, bind, send the sync search."""
        self._search.open()

    def take(self, limit: int) -> list[dict]:
        """Up to `limit` messages, without waiting. A searchResDone comes alone, after what preceded it."""
        taken: list[dict] = []
        with self._room:
            while self._messages and len(taken) < limit:
                if self._messages[0]["type"] == "searchResDone" and taken:
                    break
                taken.append(self._messages.popleft())
                if taken[-1]["type"] == "searchResDone":
                    break
            self._room.notify_all()
        return taken

    def close(self) -> None:
        """Blocking: end the search, close the connection, wait for the receiving thread."""
        with self._room:
            self._closed = True
            self._room.notify_all()
        self._search.close()

    def _receive(self, message: dict) -> None:
        """On the receiving thread: hand the message over, waiting while the inbox is full."""
        with self._room:
            while len(self._messages) >= _INBOX_CAPACITY and not self._closed:
                self._room.wait()
            if self._closed:
                return
            # Only the first message into an empty inbox wakes the reader: it takes all there is.
            wake = not self._messages
            self._messages.append(message)
        if not wake:
            return
        try:
            self.loop.call_soon_threadsafe(self.wake.set)
        except RuntimeError:
            pass  # the event loop is gone: nobody is reading any more


def _csns(cookie: bytes) -> list[str]:
    """The CSNs of a cookie (``rid=000,sid=001,csn=<csn>;<csn>``)."""
    _, found, rest = cookie.decode("latin-1").partition("csn=")
    return [csn for csn in rest.split(",")[0].split(";") if csn] if found else []


def _has_state(cookie: bytes | None) -> bool:
    # slapd sends "rid=NNN" with no csn when an entry did not advance its contextCSN; resuming
    # from such a cookie would mean "no state": a full reload of the log.
    return bool(cookie) and b"csn=" in cookie


# Cookies are opaque bytes; latin-1 maps each byte to one character, so any cookie survives the
# round trip through a text position unchanged (slapd's are ASCII anyway).
def _position(cookie: bytes) -> str:
    return cookie.decode("latin-1")


def _cookie(position: str) -> bytes:
    return position.encode("latin-1")
