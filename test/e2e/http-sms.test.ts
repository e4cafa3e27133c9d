/**
 * An SMS through `runcap serve --http`, on both protocol eras: the real Twilio SDK against
 * vendor-sim, reserved and settled in the ledger of the key's run, as over stdio.
 */
import { describe, expect, it } from 'vitest';
import { type Home, textOf } from '../helpers/e2e.js';
import { connectHttp, type Era, type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;

httpServerForFile((home, served) => {
  h = home;
  server = served;
});

describe.each<Era>(['legacy', '2026-07-28'])('send_sms over HTTP (%s client)', (era) => {
  it('is sent through the real Twilio SDK and settled at its estimate against this run\'s cap', async () => {
    const { id, key } = await h.issue(`sms-${era}`, { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000 }] });
    const c = await connectHttp(server.url, key, era);
    try {
      expect((await c.client.listTools()).tools.map((t) => t.name)).toContain('send_sms');
      const before = h.sim.created().twilio.length;
      const r = await c.call('send_sms', { to: '+14155552671', body: `shipped (${era})` });
      expect(r.isError, textOf(r)).toBeFalsy();
      expect(r.structuredContent).toMatchObject({ segments: 1, cost_usd: '0.0083', cost_estimated: true });
      expect(h.sim.created().twilio.slice(before)).toMatchObject([{ to: '+14155552671', body: `shipped (${era})` }]);
      // the settle is written right after the answer left: this process reads it a moment later
      await expect.poll(async () => (await h.guard.ledger.budget(id)).caps.find((cap) => cap.window === 'total')).toMatchObject({ settledMicros: 8_300, pendingMicros: 0 });
    } finally {
      await c.close();
    }
  });
});
