"""Site collections kept in a SQL database (SQLite by default, PostgreSQL supported): the
collaboration platform that person sync reads membership from and writes profiles to."""

from connectors.sites.store import SqlSiteStore, open_site_store, open_store

__all__ = ["SqlSiteStore", "open_site_store", "open_store"]
