/**
 * The key API (/vault/keys) called directly, as the HTTP server calls a route: a real home (its
 * SQLite file, or a PostgreSQL schema in the postgres project), a real guard and ledger, a Request
 * in and a Response out. Every answer and log line is recorded for the leak scan of the home's
 * cleanup (no vault-key secret but a new child's in the answer that issued it, no vendor credential).
 * Expiry is compared with the ledger's clock (PostgreSQL's, which a shifted host clock does not move).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RouteContext } from '../../src/http/route.js';
import { vaultKeysRoute } from '../../src/http/vault-keys.js';
import { CHILD_BODY_FIELDS } from '../../src/http/vault-keys-body.js';
import { forbidKey, recordedCount, recordText, secretsIn, setupHome, type Home } from '../helpers/e2e.js';

const BASE = 'http://127.0.0.1:8787';
const USD = 1_000_000;

let h: Home;
let lines: string[];
let refusals: string[];

beforeEach(async () => {
  h = await setupHome();
  lines = [];
  refusals = [];
  recordText('log of the key API', () => lines.join('\n'));
});
afterEach(async () => {
  await h.cleanup();
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

let calls = 0;

/** One request through the route, as the server would hand it over (the bearer already taken from the header). */
async function call(method: string, path: string, opts: { bearer?: string; body?: unknown; raw?: string } = {}): Promise<Answer> {
  const ctx: RouteContext = {
    bearer: opts.bearer,
    guard: h.guard,
    log: (line) => lines.push(line),
    refused: (reason) => refusals.push(reason),
  };
  const url = new URL(path, BASE);
  expect(vaultKeysRoute.matches(url)).toBe(true);
  const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  const init: RequestInit = { method, headers: { 'content-type': 'application/json', ...(opts.bearer !== undefined ? { authorization: `Bearer ${opts.bearer}` } : {}) } };
  if (body !== undefined) init.body = body;
  const res = await vaultKeysRoute.handle(new Request(url, init), ctx);
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  // a new child's key may appear in the answer that issued it, and never again
  const child = method === 'POST' && res.status === 201 ? (json.key as string) : undefined;
  if (child) forbidKey(child, `child key from POST #${++calls}`);
  recordText(`${method} ${path} answer #${calls}`, JSON.stringify({ status: res.status, headers: [...res.headers], text }), child ? [child] : []);
  return { status: res.status, headers: res.headers, text, json };
}

/** A root key that may delegate, as a human would issue it for an orchestrator. */
async function orchestrator(policy: Record<string, unknown> = {}) {
  return h.issue('orch', { allow: ['stripe.*', 'twilio.*', 'resend.*', 'deploy_*'], caps: [{ window: 'total', usd_micros: 100 * USD }, { window: 'daily', usd_micros: 50 * USD }], may_delegate: true, ...policy });
}

function expectError(a: Answer, status: number, code: string, message?: RegExp): void {
  expect(a.status, a.text).toBe(status);
  expect(a.headers.get('content-type')).toBe('application/json');
  expect(Object.keys(a.json)).toEqual(['error']);
  expect(Object.keys(a.json.error).sort()).toEqual(['code', 'message']);
  expect(a.json.error.code).toBe(code);
  if (message) expect(a.json.error.message).toMatch(message);
}

const keyCount = async () => (await h.guard.ledger.listKeys()).length;
const auditCount = async () => (await h.guard.ledger.queryAudit({})).length;

describe('POST /vault/keys', () => {
  it('issues a child of the bearer with every policy field the CLI offers; the secret is answered once, and the key works', async () => {
    const parent = await orchestrator();
    const a = await call('POST', '/vault/keys', {
      bearer: parent.key,
      body: {
        label: 'run-42',
        allow: ['stripe.*', 'twilio.messages.create', 'deploy_*'],
        cap_total_usd: 20,
        cap_daily_usd: '10.50',
        cap_monthly_usd: 15,
        per_call_max_usd: 5,
        max_calls: [{ action: 'twilio.*', calls: 20, window: 'daily' }],
        ttl: '2h',
        grant_ttl: '10m',
        rate_per_min: 30,
        approve_over_usd: 2,
        approve: ['twilio.*'],
        sms_countries: ['us', 'CA'],
        email_domains: ['example.com'],
        email_from: ['bot@example.com'],
        sms_from: ['+15005550006'],
        session_cap_total_usd: 3,
        session_ttl: '30m',
        may_delegate: true,
        max_children: 3,
      },
    });
    expect(a.status, a.text).toBe(201);
    expect(Object.keys(a.json).sort()).toEqual(['expires_at', 'id', 'key', 'label', 'policy', 'vault_key']);
    expect(a.json.key).toMatch(new RegExp(`^${a.json.id}_`));
    expect(a.json.vault_key).toBe(a.json.key);
    expect(a.json.label).toBe('orch/run-42');
    expect(a.headers.get('location')).toBe(`/vault/keys/${a.json.id}`);
    expect(a.headers.get('cache-control')).toBe('no-store');
    expect(Math.abs(Date.parse(a.json.expires_at) - (await h.guard.ledger.now()) - 2 * 3600_000)).toBeLessThan(60_000);
    expect(a.json.policy).toMatchObject({
      allow: ['stripe.*', 'twilio.messages.create', 'deploy_*'],
      rate_per_min: 30,
      grant_ttl_s: 600,
      approve_over_usd_micros: 2 * USD,
      approve_actions: ['twilio.*'],
      sms_countries: ['US', 'CA'],
      email_domains: ['example.com'],
      email_from: ['bot@example.com'],
      sms_from: ['+15005550006'],
      may_delegate: true,
      max_children: 3,
      session: { caps: [{ window: 'total', usd_micros: 3 * USD }], ttl_s: 1800 },
    });
    expect(a.json.policy.caps).toEqual([
      { window: 'per_call', usd_micros: 5 * USD },
      { window: 'total', usd_micros: 20 * USD },
      { window: 'daily', usd_micros: 10.5 * USD },
      { window: 'monthly', usd_micros: 15 * USD },
      { window: 'daily', calls: 20, action: 'twilio.*' },
    ]);

    // the key is a real child: its parent is the bearer, its spend counts, and the ledger audited its issue
    const info = await h.guard.ledger.resolveKey(a.json.key);
    expect(info).toMatchObject({ id: a.json.id, parentId: parent.id, status: 'active' });
    const spent = await h.guard.verify(a.json.key, { action: 'deploy_preview', amountUsd: 1 });
    expect(spent).toMatchObject({ allowed: true });
    const issued = (await h.guard.ledger.queryAudit({ keyId: a.json.id })).filter((r) => r.event === 'key_issued');
    expect(issued).toHaveLength(1);
    expect(issued[0]!.issuer).toBe('orch (POST /vault/keys)');
    expect(refusals).toEqual([]);
    expect(lines.join('\n')).toContain(`${parent.id} issued ${a.json.id}`);
  });

  it("accepts the common shape (label, daily_usd_cap, expires_in, allowed_endpoints) and answers vault_key; a child left without allow gets its parent's actions", async () => {
    const parent = await orchestrator();
    const a = await call('POST', '/vault/keys', {
      bearer: parent.key,
      body: {
        label: 'billing-run-abc123',
        daily_usd_cap: 5,
        expires_in: '1h',
        allowed_endpoints: ['POST /v1/payment_intents', 'POST /2010-04-01/Accounts/ACxxxxxxxx/Messages.json', 'post /emails', 'POST /stripe/v1/payment_intents'],
      },
    });
    expect(a.status, a.text).toBe(201);
    expect(a.json.vault_key).toBe(a.json.key);
    expect(a.json.policy.allow).toEqual(['stripe.payment_intents.create', 'twilio.messages.create', 'resend.emails.send']);
    expect(a.json.policy.caps).toEqual([{ window: 'daily', usd_micros: 5 * USD }]);
    expect(Math.abs(Date.parse(a.json.expires_at) - (await h.guard.ledger.now()) - 3600_000)).toBeLessThan(60_000);

    const plain = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'plain', cap_total_usd: 1, expires_in: 600 } });
    expect(plain.status, plain.text).toBe(201);
    expect(plain.json.policy.allow).toEqual(['stripe.*', 'twilio.*', 'resend.*', 'deploy_*']);
    expect(Math.abs(Date.parse(plain.json.expires_at) - (await h.guard.ledger.now()) - 600_000)).toBeLessThan(60_000);
  });

  it('refuses an endpoint runcap does not guard, and malformed or unknown input, with 400 INVALID_INPUT; nothing is issued or audited', async () => {
    const parent = await orchestrator();
    const keysBefore = await keyCount();
    const auditBefore = await auditCount();
    const cases: [string, { body?: unknown; raw?: string }, RegExp][] = [
      ['unguarded endpoint', { body: { label: 'r', allowed_endpoints: ['GET /v1/customers'] } }, /runcap does not guard GET \/v1\/customers; it guards POST \/v1\/payment_intents/],
      ['unguarded endpoint', { body: { label: 'r', allowed_endpoints: ['POST /v1/refunds'] } }, /does not guard POST \/v1\/refunds/],
      ['no method', { body: { label: 'r', allowed_endpoints: ['/v1/payment_intents'] } }, /is not "METHOD \/path"/],
      ['unknown field', { body: { label: 'r', cap_total: 5 } }, /^unknown field "cap_total"; the fields are label, allow, /],
      ['bad JSON', { raw: '{"label": "r",' }, /not valid JSON/],
      ['empty body', { raw: '' }, /must be a JSON object/],
      ['an array', { body: [{ label: 'r' }] }, /must be a JSON object/],
      ['no label', { body: { cap_total_usd: 5 } }, /^label: /],
      ['both daily caps', { body: { label: 'r', daily_usd_cap: 1, cap_daily_usd: 1 } }, /cap_daily_usd and daily_usd_cap are the same field/],
      ['both ttls', { body: { label: 'r', ttl: '1h', expires_in: '1h' } }, /ttl and expires_in are the same field/],
      ['allow and endpoints', { body: { label: 'r', allow: ['stripe.*'], allowed_endpoints: ['POST /emails'] } }, /either as allow or as allowed_endpoints/],
      ['bad USD', { body: { label: 'r', cap_total_usd: 'lots' } }, /^cap_total_usd: /],
      ['negative USD', { body: { label: 'r', cap_total_usd: -1 } }, /^cap_total_usd: /],
      ['bad duration', { body: { label: 'r', expires_in: 'soon' } }, /^expires_in: "soon" is not a duration/],
      ['bad label', { body: { label: 'a run' } }, /label/],
      ['bad glob', { body: { label: 'r', allow: ['stripe.**/'] } }, /glob/],
      ['bad country', { body: { label: 'r', sms_countries: ['USA'] } }, /sms_countries/],
    ];
    for (const [what, input, message] of cases) {
      const a = await call('POST', '/vault/keys', { bearer: parent.key, ...input });
      expectError(a, 400, 'INVALID_INPUT', message);
      expect(what && a.status).toBe(400);
    }
    expect(await keyCount()).toBe(keysBefore);
    // the ledger audits the refusals it decides (a bad glob, a bad country), bounded; the rest never reach it
    const audit = (await h.guard.ledger.queryAudit({})).slice(auditBefore);
    expect(audit.every((r) => r.event === 'denied' && r.code === 'INVALID_INPUT')).toBe(true);
    expect(audit.length).toBeLessThanOrEqual(3);
    expect(refusals).toEqual(cases.map(() => 'vault_keys_invalid_input'));
  });

  it('narrows only: a wider child, one that outlives its parent, or a bearer that may not delegate is 403; max children reached is 409', async () => {
    const parent = await orchestrator({ max_children: 1 });
    const wider: [unknown, RegExp][] = [
      [{ label: 'r', cap_total_usd: 101 }, /^widening refused: total cap \$101\.00 is above what the parent has left \(\$100\.00\)/],
      [{ label: 'r', cap_daily_usd: 60 }, /^widening refused: daily cap/],
      [{ label: 'r', allow: ['verify.*'] }, /^widening refused: action verify\.\* is not allowed for the parent/],
      [{ label: 'r', allowed_endpoints: ['POST /emails'], max_children: 5 }, /^widening refused: 5 live children is above the parent's 1/],
      [{ label: 'r', ttl: '30d' }, /^a child cannot outlive its parent/],
    ];
    for (const [body, message] of wider) expectError(await call('POST', '/vault/keys', { bearer: parent.key, body }), 403, 'INVALID_INPUT', message);

    const first = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'first', cap_total_usd: 1 } });
    expect(first.status, first.text).toBe(201);
    expectError(await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'second', cap_total_usd: 1 } }), 409, 'INVALID_INPUT', /already has 1 live children \(limit 1\)/);
    // the limit is of live children: once the first is revoked, there is room again
    expect((await call('DELETE', `/vault/keys/${first.json.id}`, { bearer: parent.key })).status).toBe(200);
    expect((await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'second', cap_total_usd: 1 } })).status).toBe(201);

    // the first child may not delegate (the default): it cannot issue a grandchild
    const run = await h.issue('plain-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 5 * USD }] });
    expectError(await call('POST', '/vault/keys', { bearer: run.key, body: { label: 'sub', cap_total_usd: 1 } }), 403, 'ACTION_NOT_ALLOWED', /may not delegate/);
    expect(refusals).toEqual([...Array(6).fill('vault_keys_invalid_input'), 'vault_keys_action_not_allowed']);
  });
});

describe('the bearer', () => {
  it('missing, malformed or unknown: 401 with WWW-Authenticate: Bearer, counted, and nothing written to the ledger', async () => {
    const parent = await orchestrator();
    const auditBefore = await auditCount();
    const keysBefore = await keyCount();
    const forged = `${parent.id}_${'A'.repeat(43)}`;
    const unknown = `vk_${'0'.repeat(26)}_${'B'.repeat(43)}`;
    forbidKey(forged, 'a forged key');
    for (const bearer of [undefined, 'not-a-key', parent.id, forged, unknown]) {
      for (const [method, path] of [['POST', '/vault/keys'], ['GET', `/vault/keys/${parent.id}`], ['DELETE', `/vault/keys/${parent.id}`]] as const) {
        const a = await call(method, path, { bearer, body: method === 'POST' ? { label: 'r', cap_total_usd: 1 } : undefined });
        expectError(a, 401, 'KEY_INVALID');
        expect(a.headers.get('www-authenticate')).toBe('Bearer realm="runcap"');
      }
    }
    // counted as /mcp counts them
    expect(refusals).toEqual(['missing_key', 'malformed_key', 'malformed_key', 'unknown_key', 'unknown_key'].flatMap((r) => [r, r, r]));
    expect(await auditCount()).toBe(auditBefore);
    expect(await keyCount()).toBe(keysBefore);
    expect((await h.guard.ledger.getKey(parent.id)).status).toBe('active');
  });

  it('revoked or expired: 403 KEY_REVOKED / KEY_EXPIRED (no WWW-Authenticate: signing in again would not help)', async () => {
    const parent = await orchestrator();
    const short = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'short', cap_total_usd: 1, may_delegate: true, ttl: 1 } });
    const gone = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'gone', cap_total_usd: 1, may_delegate: true } });
    await h.guard.ledger.revokeKey(gone.json.id, { by: 'test' });
    await new Promise((r) => setTimeout(r, 1200));
    for (const [key, code] of [[gone.json.key, 'KEY_REVOKED'], [short.json.key, 'KEY_EXPIRED']] as const) {
      for (const [method, path] of [['POST', '/vault/keys'], ['GET', `/vault/keys/${gone.json.id}`]] as const) {
        const a = await call(method, path, { bearer: key, body: method === 'POST' ? { label: 'r', cap_total_usd: 1 } : undefined });
        expectError(a, 403, code);
        expect(a.headers.get('www-authenticate')).toBeNull();
      }
    }
    expect(refusals).toEqual(['vault_keys_key_revoked', 'vault_keys_key_revoked', 'vault_keys_key_expired', 'vault_keys_key_expired']);
  });
});

describe('GET and DELETE /vault/keys/{id}: only the bearer and its descendants', () => {
  it("GET answers a key of the subtree with its policy and budget; anything else is 404 in the same words as a key that does not exist", async () => {
    const parent = await orchestrator();
    const child = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'child', cap_total_usd: 10, may_delegate: true } });
    const grandchild = await call('POST', '/vault/keys', { bearer: child.json.key, body: { label: 'grandchild', cap_total_usd: 4 } });
    const sibling = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'sibling', cap_total_usd: 1 } });
    const stranger = await h.issue('stranger', { allow: ['stripe.*'] });
    expect(await h.guard.verify(grandchild.json.key, { action: 'deploy_preview', amountUsd: '1.25' })).toMatchObject({ allowed: true });

    const own = await call('GET', `/vault/keys/${child.json.id}`, { bearer: child.json.key });
    expect(own.status, own.text).toBe(200);
    expect(own.json).toMatchObject({ id: child.json.id, label: 'orch/child', status: 'active', parent: parent.id, session: false, revoked_at: null, policy: { allow: ['stripe.*', 'twilio.*', 'resend.*', 'deploy_*'] } });
    const below = await call('GET', `/vault/keys/${grandchild.json.id}`, { bearer: child.json.key });
    expect(below.status, below.text).toBe(200);
    expect(below.json.label).toBe('orch/child/grandchild');
    const total = below.json.budget.caps.find((c: any) => c.scope === 'orch/child/grandchild' && c.window === 'total');
    expect(total).toMatchObject({ limit_usd: '4.00', settled_usd: '1.25', remaining_usd: '2.75', calls: 1 });
    expect(below.json.budget.remaining_usd).toBe('2.75');
    // the root sees the whole tree
    expect((await call('GET', `/vault/keys/${grandchild.json.id}`, { bearer: parent.key })).status).toBe(200);

    const missing = `vk_${'0'.repeat(26)}`;
    const answers = [];
    for (const id of [parent.id, sibling.json.id, stranger.id, missing, 'nonsense']) {
      const a = await call('GET', `/vault/keys/${id}`, { bearer: child.json.key });
      expectError(a, 404, 'NOT_FOUND');
      answers.push(a.json.error.message.replace(id, '<id>'));
    }
    expect(new Set(answers).size).toBe(1);
    expect(answers[0]).toBe(`no key <id> in the subtree of ${child.json.id}`);
  });

  it('DELETE revokes a key of the subtree and everything below it, effective on its next call; outside it is 404 and nothing changes', async () => {
    const parent = await orchestrator();
    const child = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'run-1', cap_total_usd: 10, may_delegate: true } });
    const grandchild = await call('POST', '/vault/keys', { bearer: child.json.key, body: { label: 'sub', cap_total_usd: 2 } });
    const other = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'run-2', cap_total_usd: 1 } });
    expect(await h.guard.verify(grandchild.json.key, { action: 'deploy_preview' })).toMatchObject({ allowed: true });

    // a sibling may not revoke its sibling, nor a child its parent
    expectError(await call('DELETE', `/vault/keys/${child.json.id}`, { bearer: other.json.key }), 404, 'NOT_FOUND');
    expectError(await call('DELETE', `/vault/keys/${parent.id}`, { bearer: child.json.key }), 404, 'NOT_FOUND');
    expect((await h.guard.ledger.getKey(child.json.id)).status).toBe('active');
    expect((await h.guard.ledger.getKey(parent.id)).status).toBe('active');

    const a = await call('DELETE', `/vault/keys/${child.json.id}?reason=run%20finished`, { bearer: parent.key });
    expect(a.status, a.text).toBe(200);
    expect(a.json).toEqual({ revoked: [child.json.id, grandchild.json.id] });
    expect(await h.guard.verify(grandchild.json.key, { action: 'deploy_preview' })).toMatchObject({ allowed: false, code: 'KEY_REVOKED' });
    expect(await h.guard.verify(child.json.key, { action: 'deploy_preview' })).toMatchObject({ allowed: false, code: 'KEY_REVOKED' });
    expect(await h.guard.verify(other.json.key, { action: 'deploy_preview' })).toMatchObject({ allowed: true });
    const row = (await h.guard.ledger.queryAudit({ keyId: child.json.id })).find((r) => r.event === 'key_revoked')!;
    expect(row.details).toMatchObject({ reason: 'run finished', by: 'orch (DELETE /vault/keys)' });

    // the revoked child still reads as revoked to its parent; revoking it again is a conflict
    expect((await call('GET', `/vault/keys/${child.json.id}`, { bearer: parent.key })).json.status).toBe('revoked');
    expectError(await call('DELETE', `/vault/keys/${child.json.id}`, { bearer: parent.key }), 409, 'CONFLICT', /already revoked/);
    // a run may end itself
    expect((await call('DELETE', `/vault/keys/${other.json.id}`, { bearer: other.json.key })).json).toEqual({ revoked: [other.json.id] });
    expectError(await call('DELETE', `/vault/keys/${parent.id}?why=x`, { bearer: parent.key }), 400, 'INVALID_INPUT', /unknown query parameter "why"; only reason/);
    // a reason ends up on a human's terminal (runcap keys show): no escape sequences or line breaks
    for (const reason of ['%1B%5D0%3Bowned%07', 'done%0Aapproved%20by%20alice']) {
      expectError(await call('DELETE', `/vault/keys/${parent.id}?reason=${reason}`, { bearer: parent.key }), 400, 'INVALID_INPUT', /printable text only/);
    }
    expect((await h.guard.ledger.getKey(parent.id)).status).toBe('active');
  });
});

describe('a key with a session template', () => {
  it('issues no child through the key API (403): its runs get session children from stdio serve, with the session caps, not the template\'s whole budget', async () => {
    const template = await orchestrator({ session: { caps: [{ window: 'total', usd_micros: 3 * USD }], ttl_s: 1800 } });
    const before = await keyCount();
    expectError(await call('POST', '/vault/keys', { bearer: template.key, body: { label: 'run-1', cap_total_usd: 90 } }), 403, 'ACTION_NOT_ALLOWED', /session template/);
    expect(await keyCount()).toBe(before);
  });
});

describe('the rest of the family', () => {
  it('other methods are 405 with Allow, other paths 404, before the bearer is looked at', async () => {
    const parent = await orchestrator();
    const collection = await call('GET', '/vault/keys', { bearer: parent.key });
    expectError(collection, 405, 'INVALID_INPUT', /^GET \/vault\/keys is not answered; use POST/);
    expect(collection.headers.get('allow')).toBe('POST');
    for (const method of ['PUT', 'PATCH', 'POST']) {
      const a = await call(method, `/vault/keys/${parent.id}`, { body: {} });
      expectError(a, 405, 'INVALID_INPUT');
      expect(a.headers.get('allow')).toBe('GET, DELETE');
    }
    expectError(await call('GET', `/vault/keys/${parent.id}/children`, { bearer: parent.key }), 404, 'NOT_FOUND');
    expectError(await call('GET', '/vault/keys/', { bearer: parent.key }), 404, 'NOT_FOUND');
    expect(vaultKeysRoute.matches(new URL('/vault/keysx', BASE))).toBe(false);
    expect(vaultKeysRoute.matches(new URL('/mcp', BASE))).toBe(false);
  });

  it("no answer or log line holds the bearer's secret, and a child's secret only in the answer that issued it", async () => {
    const parent = await orchestrator();
    const issued = await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'run', cap_total_usd: 2, may_delegate: true } });
    const answers = [
      issued,
      await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'wide', cap_total_usd: 1000 } }),
      await call('POST', '/vault/keys', { bearer: parent.key, body: { label: 'r', [parent.key]: 1 } }),
      await call('GET', `/vault/keys/${issued.json.id}`, { bearer: parent.key }),
      await call('GET', `/vault/keys/${issued.json.id}`, { bearer: issued.json.key }),
      await call('GET', `/vault/keys/${parent.id}`, { bearer: issued.json.key }),
      await call('DELETE', `/vault/keys/${issued.json.id}`, { bearer: parent.key }),
      await call('GET', `/vault/keys/${issued.json.id}`, { bearer: issued.json.key }),
    ];
    const parentSecret = parent.key.slice(parent.id.length + 1);
    const childSecret = (issued.json.key as string).slice(issued.json.id.length + 1);
    for (const [i, a] of answers.entries()) {
      const all = `${[...a.headers].join('\n')}\n${a.text}`;
      // not even a part of it (a message may quote what the caller sent, cut short)
      expect(all, `answer #${i}`).not.toContain(parentSecret.slice(0, 12));
      if (i > 0) expect(all, `answer #${i}`).not.toContain(childSecret.slice(0, 12));
      expect(secretsIn(all, new Set(i === 0 ? [issued.json.key, childSecret] : [])), `answer #${i}`).toEqual([]);
    }
    expect(issued.text).toContain(childSecret);
    const log = lines.join('\n');
    expect(log).not.toBe('');
    expect(log).not.toContain(parentSecret);
    expect(log).not.toContain(childSecret);
    expect(recordedCount()).toBeGreaterThan(answers.length);
  });
});

it("the README's table of the body names every field POST /vault/keys accepts, and no other", () => {
  const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('**The body of `POST /vault/keys`**'), readme.indexOf('**Errors** are'));
  const documented = section
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .flatMap((l) => [...l.split('|')[1]!.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!));
  expect(documented.sort()).toEqual([...CHILD_BODY_FIELDS].sort());
});
