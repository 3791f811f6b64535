"""Wake-ups for the DirSync poll from Active Directory's change notification control.

A search with LDAP_SERVER_NOTIFICATION_OID never ends: the DC sends an entry each time an
object in its scope changes (measured on single-process Samba: 6-8 ms after the write). It
carries no position and can be lost (a dropped connection, a restarted DC, a server that
refuses the control), so it is only a signal: the DirSync poll reads at once instead of at the
end of its interval, and the interval stays the safety net. The search covers the subtree of
the naming context, the range DirSync reads; Samba accepts a subtree notification at any base,
and Windows documents subtree notifications only for a naming context's root.

The search runs on a connection and a receiving thread of its own (connectors.ldap.persistent);
each message crosses to asyncio with ``call_soon_threadsafe``. When the connection drops or the
server ends the search, a new subscription is made with backoff, and the poll is woken once it
is back, for whatever changed while nobody listened.
"""

from __future__ import annotations

import asyncio
import logging

from ldap3.protocol.microsoft import persistent_search_control

from connectors.ldap.persistent import PersistentSearch
from streams.config.forests import Forest
from streams.contracts import ConnectorError
from streams.monitoring.backoff import Backoff

log = logging.getLogger(__name__)

NOTIFICATION_OID = "1.2.840.113556.1.4.528"
# How soon a dropped notification connection is noticed.
_LIVENESS_SECONDS = 0.5


class ChangeNotifications:
    """A flag that the DC raises whenever something changed; lower it before each DirSync read."""

    def __init__(self, forest: Forest) -> None:
        self._forest = forest
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._subscription: _Subscription | None = None

    def start(self, root: str) -> None:
        """Subscribe to changes under `root` (a naming context), once; re-subscribes by itself."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep_subscribed(root), name=f"notifications-{self._forest.name}")

    def clear(self) -> None:
        self._changed.clear()

    async def wait(self, timeout: float) -> None:
        """Until a change is notified (possibly one since the last clear) or `timeout` s pass."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _keep_subscribed(self, root: str) -> None:
        backoff = Backoff()
        # A loss is logged once, not again until a subscription has worked (a DC that refuses the
        # control would otherwise log every retry).
        loss_reported = False
        loop = asyncio.get_running_loop()
        while True:
            subscription = self._subscription = _Subscription(
                self._forest, root, on_message=lambda: loop.call_soon_threadsafe(self._notified)
            )
            try:
                await asyncio.to_thread(subscription.open)
                log.debug("change notifications subscribed forest=%s root=%s", self._forest.name, root)
                # Whatever changed while nobody listened: the poll reads it now, not at its interval.
                self._changed.set()
                while subscription.listening:
                    await asyncio.sleep(_LIVENESS_SECONDS)
                reason = subscription.end_reason or "connection closed"
            except ConnectorError as exc:
                reason = str(exc)
            finally:
                await asyncio.to_thread(subscription.close)
            if subscription.notified:
                backoff.reset()
                loss_reported = False
            delay = backoff.next_delay()
            if not loss_reported:
                log.warning(
                    "change notifications lost, polling only until subscribed again forest=%s reason=%r retry_in=%.1fs",
                    self._forest.name, reason, delay,
                )
                loss_reported = True
            await asyncio.sleep(delay)

    def _notified(self) -> None:
        self._changed.set()


class _Subscription:
    """One notification search on a connection of its own."""

    def __init__(self, forest: Forest, root: str, *, on_message) -> None:
        self._on_message = on_message
        self.notified = False
        self._search = PersistentSearch(
            forest,
            base=root,
            search_filter="(objectClass=*)",  # the only filter AD accepts with the control
            attributes=["1.1"],
            controls=[persistent_search_control()],
            on_message=self._receive,
        )

    @property
    def listening(self) -> bool:
        return self._search.alive

    @property
    def end_reason(self) -> str | None:
        return self._search.end_reason

    def open(self) -> None:
        """Blocking: connect, bind, send the notification search."""
        self._search.open()

    def close(self) -> None:
        """Blocking: end the search, close the connection, wait for the receiving thread."""
        self._search.close()

    def _receive(self, message: dict) -> None:
        """On the receiving thread."""
        if message.get("type") == "searchResEntry":
            self.notified = True
        try:
            self._on_message()
        except RuntimeError:
            pass  # the event loop is gone: nobody waits any more
