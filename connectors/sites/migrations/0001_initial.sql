-- Site collections, their membership lists and per-site change logs.
-- Portable SQL: the same statements run on SQLite 3.35+ and PostgreSQL 12+.
-- Statements are separated by semicolons at line ends; no semicolon may appear inside one.

CREATE TABLE sites (
    site_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    -- The newest change token handed out for this site (0: no change yet).
    last_token BIGINT NOT NULL DEFAULT 0,
    -- Tokens below this are expired: the changes after them were pruned from the log.
    log_floor BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- The user information list: one row per member, with the site's copy of their profile.
CREATE TABLE site_members (
    site_id TEXT NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    login TEXT NOT NULL,
    -- The metaverse person the member resolves to: set by idsync, NULL until then.
    person TEXT,
    -- A JSON object of strings, keys sorted, so equal profiles are equal texts.
    properties TEXT NOT NULL,
    PRIMARY KEY (site_id, login)
);

CREATE TABLE site_changes (
    site_id TEXT NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    token BIGINT NOT NULL,
    login TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('added', 'removed', 'properties-changed')),
    -- The member's properties after the change (an empty object for 'removed').
    properties TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (site_id, token)
);
