"""The login index of person sync: keyed by login, it meets the two sides of a membership.

Site stores' membership changes arrive keyed by the member's login (the site-changes topic),
and persons claim their logins on the login-claims topic under the same keys, so both land in
the same partition and the same table entry (streams/rules/profiles.py LoginEntry). Whenever a
membership changes or the login's owner changes, the owner's profile (keyed by person id) hears
of it on the person-changes topic. A login that resolves to nobody is listed, and gets no writes.

A full read of a site ends with a marker on every partition: each partition drops the site's
memberships the read did not publish (the member is no longer listed).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from streams.processors.stages import EngineContext
from streams.rules.profiles import LoginEntry, login_owner
from streams.site_events import (
    ClaimState,
    LoginClaim,
    MembershipOp,
    SiteMembership,
    SiteMembershipChange,
    SiteSnapshotEnd,
)

log = logging.getLogger(__name__)
LOGIN_AMBIGUOUS = "login-ambiguous"


class LoginStage:
    def __init__(self, context: EngineContext) -> None:
        self._c = context
        self._s = context.settings

    async def on_site_change(self, key: bytes, change: SiteMembershipChange) -> None:
        entry = self._entry(key, change.member_login)
        site_id = change.site_id
        if change.op is MembershipOp.REMOVED:
            memberships = {k: v for k, v in entry.memberships.items() if k != site_id}
        else:
            membership = {
                "store": change.store, "site": change.site, "login": change.member_login,
                "token": change.change_token, "snapshot_id": change.snapshot_id,
                "properties": dict(change.properties),
            }
            memberships = {**entry.memberships, site_id: membership}
        updated = replace(entry, memberships=memberships)
        self._c.logins[key] = updated.to_bytes()
        owner = updated.owner
        if owner is not None:
            if change.op is MembershipOp.REMOVED:
                await self._tell(owner, entry.memberships.get(site_id) or _bare(change), present=False)
            else:
                await self._tell(owner, memberships[site_id], present=True)

    async def on_snapshot_end(self, end: SiteSnapshotEnd, partition: int) -> None:
        """The site's memberships on this partition that the full read did not publish are gone."""
        site_id, dropped = end.site_id, 0
        for key in [k for k in list(self._c.logins) if self._c.partition_of(k) == partition]:
            entry = LoginEntry.from_bytes(self._c.logins[key])
            membership = entry.memberships.get(site_id)
            if membership is None or membership.get("snapshot_id") == end.snapshot_id:
                continue
            self._c.logins[key] = replace(
                entry, memberships={k: v for k, v in entry.memberships.items() if k != site_id}
            ).to_bytes()
            dropped += 1
            if (owner := entry.owner) is not None:
                await self._tell(owner, membership, present=False)
        log.info("site full read applied site=%s partition=%d snapshot=%s reason=%s dropped=%d",
                 site_id, partition, end.snapshot_id, end.reason, dropped)

    async def on_claim(self, key: bytes, claim: LoginClaim) -> None:
        entry = self._entry(key, claim.login)
        claims = {k: v for k, v in entry.claims.items() if k != claim.person}
        if claim.state is not ClaimState.WITHDRAWN:
            claims[claim.person] = {"state": str(claim.state), "at": claim.at}
        updated = replace(entry, claims=claims)
        before, contested_before = login_owner(entry.claims)
        after, contested = login_owner(claims)
        if updated.claims or updated.memberships:
            self._c.logins[key] = updated.to_bytes()
        elif key in self._c.logins:
            del self._c.logins[key]
        if contested != contested_before:
            await self._c.report_conflict(
                f"login:{entry.login}", LOGIN_AMBIGUOUS,
                f"{len(contested)} persons claim login {entry.login!r}; its site memberships resolve to nobody "
                "until one of them no longer has it" if contested else "resolved",
                (entry.login, *(contested or contested_before)), open=bool(contested),
            )
        for membership in updated.memberships.values():
            if before is not None and before != after:
                await self._tell(before, membership, present=False)
            if after is not None:
                # To the same owner too: a claim delivered again re-sends what a crash may have lost.
                await self._tell(after, membership, present=True)

    def _entry(self, key: bytes, login: str) -> LoginEntry:
        raw = self._c.logins.get(key)
        return LoginEntry.from_bytes(raw) if raw is not None else LoginEntry(login=login.casefold())

    async def _tell(self, person: str, membership: dict, *, present: bool) -> None:
        event = SiteMembership(
            person=person, store=membership["store"], site=membership["site"], login=membership["login"],
            present=present, properties=membership.get("properties", {}) if present else {},
        )
        await self._c.send(self._s.topics.persons, person.encode(), event.to_bytes())


def _bare(change: SiteMembershipChange) -> dict:
    return {"store": change.store, "site": change.site, "login": change.member_login}
