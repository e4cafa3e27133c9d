/**
 * Numbered migrations. PRAGMA user_version holds the last one applied; each
 * runs in its own transaction. Never edit a shipped migration: add one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the first schema
  `
  CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE keys (
    id             TEXT PRIMARY KEY,
    secret_hash    TEXT NOT NULL,
    label          TEXT NOT NULL,
    issued_by      TEXT NOT NULL,
    parent_id      TEXT REFERENCES keys(id),
    ancestors      TEXT NOT NULL,          -- JSON array of ancestor ids, root first
    depth          INTEGER NOT NULL,
    is_session     INTEGER NOT NULL DEFAULT 0,
    policy         TEXT NOT NULL,          -- JSON, validated by policySchema
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT,
    revoked_by     TEXT
  );
  CREATE INDEX keys_parent ON keys(parent_id);

  -- every cap of every key, and the global vendor caps (key_id NULL)
  CREATE TABLE caps (
    id         INTEGER PRIMARY KEY,
    key_id     TEXT REFERENCES keys(id),
    scope      TEXT NOT NULL,              -- key label or vendor:<name>
    window     TEXT NOT NULL CHECK (window IN ('per_call','total','daily','monthly')),
    usd_micros INTEGER,
    calls      INTEGER,
    action     TEXT
  );
  CREATE INDEX caps_key ON caps(key_id);

  -- running totals: cap:<id> per window, and label:/vendor:/day: spend groups
  CREATE TABLE counters (
    scope      TEXT NOT NULL,
    window_key TEXT NOT NULL,
    settled    INTEGER NOT NULL DEFAULT 0,
    pending    INTEGER NOT NULL DEFAULT 0,
    uncertain  INTEGER NOT NULL DEFAULT 0,
    calls      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, window_key)
  ) WITHOUT ROWID;

  CREATE TABLE reservations (
    id           TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL REFERENCES keys(id),
    label        TEXT NOT NULL,
    action       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending','settled','released','uncertain')),
    estimate     INTEGER NOT NULL,
    actual       INTEGER,
    estimated    INTEGER NOT NULL DEFAULT 0,
    corrected    INTEGER NOT NULL DEFAULT 0,
    vendor_ref   TEXT,
    day          TEXT NOT NULL,
    month        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    request      TEXT NOT NULL,
    normalized   TEXT,
    note         TEXT
  ) WITHOUT ROWID;
  CREATE INDEX reservations_open ON reservations(fingerprint) WHERE state IN ('pending','uncertain');
  CREATE INDEX reservations_state ON reservations(state, created_at);
  CREATE INDEX reservations_key ON reservations(key_id, created_at);

  -- which counters a reservation counts in, fixed at authorize time
  CREATE TABLE reservation_counts (
    reservation_id TEXT NOT NULL,
    scope          TEXT NOT NULL,
    window_key     TEXT NOT NULL,
    PRIMARY KEY (reservation_id, scope, window_key)
  ) WITHOUT ROWID;

  CREATE TABLE rate_events (
    key_id TEXT NOT NULL,
    at     INTEGER NOT NULL
  );
  CREATE INDEX rate_events_key_at ON rate_events(key_id, at);

  CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,
    key_id         TEXT NOT NULL REFERENCES keys(id),
    action         TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    estimate       INTEGER NOT NULL,
    request        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending','approved','denied','expired','consumed')),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    decided_at     INTEGER,
    decided_by     TEXT,
    deny_reason    TEXT,
    reservation_id TEXT
  ) WITHOUT ROWID;
  CREATE INDEX approvals_lookup ON approvals(key_id, fingerprint, created_at);
  CREATE INDEX approvals_status ON approvals(status, created_at);

  CREATE TABLE audit (
    id             INTEGER PRIMARY KEY,
    chain          TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    event          TEXT NOT NULL,
    key_id         TEXT,
    label          TEXT,
    issuer         TEXT,
    delegation     TEXT NOT NULL,
    action         TEXT,
    amount         INTEGER,
    vendor_ref     TEXT,
    code           TEXT,
    reservation_id TEXT,
    approval_id    TEXT,
    details        TEXT NOT NULL,
    prev_mac       TEXT NOT NULL,
    mac            TEXT NOT NULL
  );
  CREATE INDEX audit_chain ON audit(chain, seq);
  CREATE INDEX audit_key_at ON audit(key_id, at);
  CREATE INDEX audit_label_at ON audit(label, at);
  CREATE INDEX audit_at ON audit(at);

  CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    mac   TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: fewer pages per decision. Every index on audit and reservations is written by each
  //    authorize and settle; the admin queries they served (audit by key/label/time, reservations
  //    by state) are rare and may scan. What the hot path reads stays indexed.
  `
  DROP INDEX audit_chain;
  DROP INDEX audit_key_at;
  DROP INDEX audit_label_at;
  DROP INDEX audit_at;
  DROP INDEX reservations_state;
  DROP INDEX reservations_key;
  `,
  // 3 (issue 9, released_by): who released a reservation — the vendor's definite refusal, reconcile
  //    (the vendor had no record of it), or a human by hand. Only a reservation reconcile released
  //    may later be settled, when the vendor's object turns up after all. Earlier releases stay NULL.
  `
  ALTER TABLE reservations ADD COLUMN released_by TEXT CHECK (released_by IN ('vendor','reconcile','hand'));
  `,
];
