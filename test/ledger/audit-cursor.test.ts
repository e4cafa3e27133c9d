/** queryAudit as a cursor (afterId, ids) and the chain MACs every row carries, on both storages. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRow } from '../../src/ledger/types.js';
import { issue, openTestLedger, PAY, req, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
let all: AuditRow[];
beforeAll(async () => {
  t = openTestLedger();
  const a = await issue(t.ledger, 'cursor-a', { allow: ['*'] });
  const b = await issue(t.ledger, 'cursor-b', { allow: ['*'] });
  for (let i = 0; i < 3; i++) {
    await t.ledger.authorize(req(a.key, PAY, 1_000_000, { i }));
    await t.ledger.authorize(req(b.key, 'deploy_staging', 0, { i }));
  }
  all = await t.ledger.queryAudit({});
});
afterAll(async () => t.close());

describe('queryAudit as a cursor', () => {
  it('afterId: the rows with a higher id, in id order, at most `limit`', async () => {
    const byId = [...all].sort((x, y) => x.id - y.id);
    const third = byId[2]!;
    expect((await t.ledger.queryAudit({ afterId: third.id })).map((r) => r.id)).toEqual(byId.slice(3).map((r) => r.id));
    expect((await t.ledger.queryAudit({ afterId: third.id, limit: 2 })).map((r) => r.id)).toEqual(byId.slice(3, 5).map((r) => r.id));
    expect(await t.ledger.queryAudit({ afterId: byId[byId.length - 1]!.id })).toEqual([]);
  });

  it('ids: exactly those rows, in id order; an id with no row is left out', async () => {
    const wanted = [all[4]!.id, all[1]!.id, 1_000_000];
    expect((await t.ledger.queryAudit({ ids: wanted })).map((r) => r.id)).toEqual([all[1]!.id, all[4]!.id].sort((x, y) => x - y));
    expect(await t.ledger.queryAudit({ ids: [] })).toEqual([]);
  });

  it('each row carries its chain MACs: prevMac is the previous row’s mac, the last mac is the head', async () => {
    const heads = new Map((await t.ledger.auditHeads()).map((h) => [h.chain, h]));
    const chains = new Map<string, AuditRow[]>();
    for (const r of [...all].sort((x, y) => x.id - y.id)) chains.set(r.chain, [...(chains.get(r.chain) ?? []), r]);
    expect(chains.size).toBeGreaterThanOrEqual(3); // global and the two keys
    for (const [chain, rows] of chains) {
      rows.forEach((r, i) => {
        expect(r.seq).toBe(i + 1);
        expect(r.prevMac).toBe(i === 0 ? '' : rows[i - 1]!.mac);
        expect(r.mac).toMatch(/^[0-9a-f]{64}$/);
      });
      expect(heads.get(chain)).toEqual({ chain, seq: rows.length, mac: rows[rows.length - 1]!.mac });
    }
  });
});
