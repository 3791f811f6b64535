"""The profile store of person sync, keyed by person id beside the persons table.

- After every change of a person (streams/processors/persons.py) its logins are claimed (or
  withdrawn) on the login-claims topic, and the replicable properties that differ from what
  each of its sites holds go to the site-writes topic, for that site only.
- A membership (streams/processors/logins.py) adds or drops a site of the person; a new one, or
  a site reporting other values (a full read, a member's own edit), gets what differs at once.
- A person with no source left in any forest is flagged departed: it keeps its logins (claimed
  as departed, so its memberships stay resolved and listed) and gets no writes until a source
  joins it again.

Writes are computed against the site's copy as the site reported it, plus what was sent since
and not yet confirmed by the site's change log (so a title change writes the title only, even
before the last write came back). A person state delivered again (after a crash, which may have
lost its writes) and every report of a site are compared with the site's copy alone: what may
have been lost is sent again, and a write that arrives twice finds the value set and writes
nothing.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

from streams.processors.stages import EngineContext
from streams.rules.person import Person, newest_change
from streams.rules.profiles import (
    Profile,
    person_logins,
    person_version,
    property_diff,
    replicable_values,
    sources,
)
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
        version = person_version(person)
        # The state whose writes were sent last, again: a re-delivery after a crash, which may
        # have lost them; so they are compared with what the sites reported, not what was sent.
        again = force or version == profile.synced_state
        updated = replace(profile, logins=person_logins(person, self._s.profiles), departed_at=None,
                          synced_state=version)
        if returned:
            log.info("departed person is back, synced again person=%s", person.person_id)
        await self._claim(updated, profile, ClaimState.LIVE, force=again or returned)
        updated = await self._write(person, updated, list(updated.memberships), "profile changed", trust_sent=not again)
        if updated.logins or updated.memberships:
            self._c.profiles[key] = updated.to_bytes()
        elif raw is not None:
            del self._c.profiles[key]

    async def on_membership(self, key: bytes, event: SiteMembership) -> None:
        if not self.enabled:
            return
        raw = self._c.profiles.get(key)
        profile = Profile.from_bytes(raw) if raw is not None else Profile(person_id=event.person)
        if event.present:
            profile = profile.with_membership(event.site_id, event.login, event.properties)
        else:
            profile = profile.without_membership(event.site_id)
        if event.present and profile.departed_at is None:
            stored = self._c.persons.get(key)
            if stored is not None:
                # Against the site's own report: what it lacks is sent again, pending or not.
                profile = await self._write(Person.from_bytes(stored), profile, [event.site_id], "membership",
                                            trust_sent=False)
        self._c.profiles[key] = profile.to_bytes()

    async def _claim(self, new: Profile, old: Profile, state: ClaimState, *, force: bool) -> None:
        at = self._now()
        for login in new.logins:
            if force or login not in old.logins:
                await self._send_claim(LoginClaim(login=login, person=new.person_id, state=state, at=at))
        for login in set(old.logins) - set(new.logins):
            await self._send_claim(LoginClaim(login=login, person=new.person_id, state=ClaimState.WITHDRAWN, at=at))

    async def _send_claim(self, claim: LoginClaim) -> None:
        await self._c.send(self._s.topics.logins, login_key(claim.login), claim.to_bytes())

    async def _write(self, person: Person, profile: Profile, site_ids: list[str], reason: str, *,
                     trust_sent: bool) -> Profile:
        """Send each site what it lacks of the person's replicable properties; the profile with
        those writes pending. `trust_sent`: what was sent and not yet confirmed counts as held."""
        if not site_ids:
            return profile
        wanted = replicable_values(person, self._s.profiles, self._s.gal.precedence)
        changed_at = newest_change(person.connectors.values())
        for site_id in site_ids:
            membership = profile.memberships.get(site_id)
            if membership is None:
                continue
            held = dict(membership["properties"])
            if trust_sent:
                held.update(membership.get("pending", {}))
            diff = property_diff(wanted, held)
            if not diff:
                continue
            store, _, site = site_id.partition("/")
            write = SiteWrite(store=store, site=site, login=membership["login"], person=person.person_id,
                              properties=diff, reason=reason, changed_at=changed_at)
            await self._c.send(self._s.topics.site_writes, write.key(), write.to_bytes())
            profile = profile.with_sent(site_id, diff)
        return profile

    def _now(self) -> str:
        return datetime.fromtimestamp(self._c.clock(), timezone.utc).isoformat()
