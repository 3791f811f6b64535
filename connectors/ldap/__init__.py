"""Shared LDAP plumbing used by every directory family: sessions, the one-pass entry decoder,
persistent searches, the forest's scope and filter, value helpers, the generic poller and the
contact writer."""
