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
  // 3 (issue 9, audit-backed grants): the ledger consumes a grant only when an approval_approved row with a
  //    valid MAC backs it and no row shows it used already (approval_consumed, or a reservation made with
  //    it), and approves only a request its approval_requested row recorded. A partial index finds the
  //    rows that name an approval; the hot path's other audit rows name none and cost no extra page.
  `
  CREATE INDEX audit_approval_rows ON audit(approval_id) WHERE approval_id IS NOT NULL;
  `,
  // 4 (denial tallies): denials decided before the ledger (malformed calls) get one audit row each
  //    only up to a bound per chain and UTC minute; past it they are counted here until one
  //    denials_counted row writes them to the chain. One row per chain, found by primary key.
  `
  CREATE TABLE denial_tallies (
    chain    TEXT PRIMARY KEY,            -- the audit chain: a key id, or 'global' for calls without a valid key
    minute   INTEGER NOT NULL,            -- floor(at / 60000) of the minute counted
    written  INTEGER NOT NULL,            -- denial rows written one by one in that minute
    held     INTEGER NOT NULL,            -- denials counted but not yet in the audit log
    codes    TEXT NOT NULL,               -- JSON { reason code: count } of the held ones
    actions  TEXT NOT NULL,               -- JSON { action: count } of the held ones
    first_at INTEGER,                     -- the first and last held one
    last_at  INTEGER
  ) WITHOUT ROWID;
  `,
  // 5 (session families): duplicates, denial holds and the cap on waiting approvals span a
  //    template key and its sessions. Fingerprints are bound to the family by the ledger, so
  //    the denial and pending lookups search approvals by fingerprint across keys, and the
  //    waiting requests of a family are counted by its family id (the template for a session,
  //    the key itself otherwise). Grants are still looked up by (key_id, fingerprint).
  //    Rows written before keep fingerprints of the old scheme (over the key id), which SQL
  //    cannot recompute: a retry after the upgrade does not match a reservation left open or a
  //    denial given before it, so resolve open reservations (runcap reconcile) before upgrading.
  `
  ALTER TABLE approvals ADD COLUMN family_id TEXT;
  UPDATE approvals SET family_id = (
    SELECT CASE WHEN k.is_session = 1 AND k.parent_id IS NOT NULL THEN k.parent_id ELSE k.id END FROM keys k WHERE k.id = approvals.key_id
  );
  CREATE INDEX approvals_fingerprint ON approvals(fingerprint, created_at);
  CREATE INDEX approvals_family_pending ON approvals(family_id, expires_at) WHERE status = 'pending';
  `,
  // 6 (issue 9, released_by): who released a reservation — the vendor's definite refusal, reconcile
  //    (the vendor had no record of it), or a human by hand. Only a reservation reconcile released
  //    may later be settled, when the vendor's object turns up after all. Earlier releases stay NULL.
  `
  ALTER TABLE reservations ADD COLUMN released_by TEXT CHECK (released_by IN ('vendor','reconcile','hand'));
  `,
  // 7 (issue 14, the proxy's idempotency keys): an allowed call made under an Idempotency-Key the
  //    agent chose, scoped to its key, found by (key, idempotency key); the answer it gave, once
  //    recorded, is replayed to a repeat. Written with the reservation, in its transaction.
  `
  CREATE TABLE idempotent_calls (
    key_id          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    reservation_id  TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    answer          TEXT,                 -- JSON { status, headers, body }; NULL until recorded
    PRIMARY KEY (key_id, idempotency_key)
  ) WITHOUT ROWID;
  `,
  // 8 (issue 15, approvals in the browser): passkeys an approver registered after typing the
  //    passphrase; each sealed (mac) to the passphrase hash it was registered under, all dropped
  //    when it changes.
  `
  CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL UNIQUE,   -- base64url, as WebAuthn gives it
    public_key    TEXT NOT NULL,          -- base64url of the COSE key
    counter       INTEGER NOT NULL CHECK (counter >= 0),
    transports    TEXT NOT NULL,          -- JSON array
    name          TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    mac           TEXT NOT NULL
  );
  `,
  // 9 (issue 16, notifications): the outbox. An event is queued, with a delivery for each endpoint
  //    that wants it, in the transaction that records what it tells (dedupe: the same happening
  //    once); delivery leases each due one while it posts. The partial index holds only the work left.
  `
  CREATE TABLE notify_events (
    id         TEXT PRIMARY KEY,
    dedupe     TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    payload    TEXT NOT NULL            -- JSON: what the ledger knew (core/notify.ts QueuedFacts)
  );
  CREATE TABLE notify_deliveries (
    event_id   TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('queued','delivered','failed')),
    attempts   INTEGER NOT NULL,
    next_at    INTEGER NOT NULL,
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, endpoint)
  ) WITHOUT ROWID;
  CREATE INDEX notify_deliveries_due ON notify_deliveries(next_at) WHERE state = 'queued';
  `,
];
