"""The profile store of person sync, keyed by person id beside the persons table.

- After every change of a person (streams/processors/persons.py) its logins are claimed (or
  withdrawn) on the login-claims topic, and the replicable properties that differ from what
  each of its sites holds go to the site-writes topic, for that site only.
- A membership (streams/processors/logins.py) adds or drops a site of the person; a new one, or
  a site reporting other values (a full read, a member's own edit), gets what differs at once.
- A person with no source left in any forest is flagged departed: it keeps its logins (claimed
  as departed, so its memberships stay resolved and listed) and gets no writes until a source
  joins it again.

Writes are computed against the site's own copy as the site reported it, never against what
idsync sent: a write lost in a crash is sent again by the next event, and one that arrives
twice finds the property set and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

from streams.processors.stages import EngineContext
from streams.rules.person import Person, newest_change
from streams.rules.profiles import Profile, person_logins, property_diff, replicable_values, sources
from streams.site_events import ClaimState, LoginClaim, SiteMembership, SiteWrite, login_key

log = logging.getLogger(__name__)


class ProfileStage:
    def __init__(self, context: EngineContext) -> None:
        self._c = context
        self._s = context.settings

    @property
    def enabled(self) -> bool:
        return self._s.profiles is not None

    async def after_person(self, person: Person, *, force: bool = False) -> None:
        """The person changed (or a change of it was delivered again: `force` re-sends)."""
        if not self.enabled:
            return
        key = person.person_id.encode()
        raw = self._c.profiles.get(key)
        profile = Profile.from_bytes(raw) if raw is not None else Profile(person_id=person.person_id)
        departed = not sources(person)
        if departed and raw is None:
            return  # never had a login or a site: nothing to flag
        if departed:
            flagged = profile if profile.departed_at is not None else replace(profile, departed_at=self._now())
            if flagged is not profile:
                log.info("person departed, flagged and no longer synced to sites person=%s sites=%d",
                         person.person_id, len(profile.memberships))
            await self._claim(flagged, profile, ClaimState.DEPARTED, force=force or flagged is not profile)
            self._c.profiles[key] = flagged.to_bytes()
            return
        returned = profile.departed_at is not None
        updated = replace(profile, logins=person_logins(person, self._s.profiles), departed_at=None)
        if returned:
            log.info("departed person is back, synced again person=%s", person.person_id)
        await self._claim(updated, profile, ClaimState.LIVE, force=force or returned)
        if updated.logins or updated.memberships:
            self._c.profiles[key] = updated.to_bytes()
        elif raw is not None:
            del self._c.profiles[key]
        await self._write(person, updated, list(updated.memberships), "profile changed")

    async def on_membership(self, key: bytes, event: SiteMembership) -> None:
        if not self.enabled:
            return
        raw = self._c.profiles.get(key)
        profile = Profile.from_bytes(raw) if raw is not None else Profile(person_id=event.person)
        if event.present:
            profile = profile.with_membership(event.site_id, event.login, event.properties)
        else:
            profile = profile.without_membership(event.site_id)
        self._c.profiles[key] = profile.to_bytes()
        if event.present and profile.departed_at is None:
            stored = self._c.persons.get(key)
            if stored is not None:
                await self._write(Person.from_bytes(stored), profile, [event.site_id], "membership")

    async def _claim(self, new: Profile, old: Profile, state: ClaimState, *, force: bool) -> None:
        at = self._now()
        for login in new.logins:
            if force or login not in old.logins:
                await self._send_claim(LoginClaim(login=login, person=new.person_id, state=state, at=at))
        for login in set(old.logins) - set(new.logins):
            await self._send_claim(LoginClaim(login=login, person=new.person_id, state=ClaimState.WITHDRAWN, at=at))

    async def _send_claim(self, claim: LoginClaim) -> None:
        await self._c.send(self._s.topics.logins, login_key(claim.login), claim.to_bytes())

    async def _write(self, person: Person, profile: Profile, site_ids: list[str], reason: str) -> None:
        if not site_ids:
            return
        wanted = replicable_values(person, self._s.profiles, self._s.gal.precedence)
        changed_at = newest_change(person.connectors.values())
        for site_id in site_ids:
            membership = profile.memberships.get(site_id)
            if membership is None:
                continue
            diff = property_diff(wanted, membership["properties"])
            if not diff:
                continue
            store, _, site = site_id.partition("/")
            write = SiteWrite(store=store, site=site, login=membership["login"], person=person.person_id,
                              properties=diff, reason=reason, changed_at=changed_at)
            await self._c.send(self._s.topics.site_writes, write.key(), write.to_bytes())

    def _now(self) -> str:
        return datetime.fromtimestamp(self._c.clock(), timezone.utc).isoformat()
