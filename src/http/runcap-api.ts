/**
 * /runcap/…: what agent code using the proxy has instead of the check_approval and get_budget
 * tools. `GET /runcap/approvals/{id}` (an approval this run's key raised, or its family's) and
 * `GET /runcap/budget` (what this key has left), with the vault key as bearer. Read-only: nothing
 * here can approve, and another run's approval is answered like one that does not exist.
 */
import { isRuncapError } from '../policy/codes.js';
import { usdDecimal } from '../policy/rules.js';
import { jsonAnswer, unauthorized } from './answers.js';
import { budgetJson } from './key-json.js';
import type { Route } from './route.js';
import type { Runs } from './runs.js';

const ONE_APPROVAL = /^\/runcap\/approvals\/(apr_[0-9A-Z]{26})$/;

const NEXT: Record<string, string> = {
  pending: 'Still waiting for a human. Do not try to approve it yourself; check again later.',
  approved: 'Approved: retry the original request now, exactly the same (the approval is single-use).',
  denied: 'A human denied it. Do not retry; tell the user.',
  expired: 'It expired. Retrying the identical request raises a new approval request.',
  consumed: 'Already used by a request that went through; a repeat needs a new approval.',
};

const error = (status: number, code: string, message: string) => jsonAnswer(status, { error: { code, message: `${code}: ${message}` } });

export function runcapApiRoute(runs: Runs): Route {
  return {
    name: 'runcap-api',
    matches: (url) => url.pathname.startsWith('/runcap/'),
    async handle(request, ctx) {
      const url = new URL(request.url);
      const found = await runs.lookup(ctx.bearer).catch(() => undefined);
      if (!found) return error(503, 'LEDGER_UNAVAILABLE', 'runcap could not reach its ledger');
      if (found.kind !== 'run') {
        ctx.refused(`runcap_api_${found.kind}_key`);
        return unauthorized();
      }
      const run = found.ctx;
      if (request.method !== 'GET') return error(405, 'INVALID_INPUT', `${request.method} is not answered here: these routes only read`);
      if ([...url.searchParams.keys()].length > 0) return error(400, 'INVALID_INPUT', 'no query parameters are taken');
      try {
        if (url.pathname === '/runcap/budget') {
          // read now, not the run's cached copy: a revocation since must show
          const [key, budget] = await Promise.all([run.guard.ledger.getKey(run.keyInfo.id), run.guard.ledger.budget(run.keyInfo.id)]);
          return jsonAnswer(200, { key_id: key.id, label: key.label, status: key.status, ...budgetJson(budget) });
        }
        const m = ONE_APPROVAL.exec(url.pathname);
        if (!m) return error(404, 'NOT_FOUND', 'runcap answers GET /runcap/approvals/{apr_…} and GET /runcap/budget');
        const a = await run.guard.ledger.approvalStatus(run.key, m[1]!);
        return jsonAnswer(200, {
          approval_id: a.id,
          status: a.status,
          action: a.action,
          amount_usd: usdDecimal(a.estimateMicros),
          expires_at: new Date(a.expiresAt).toISOString(),
          next: NEXT[a.status] ?? '',
        });
      } catch (err) {
        if (isRuncapError(err) && err.code === 'NOT_FOUND') return error(404, 'NOT_FOUND', 'this run raised no such approval request');
        if (isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED' || err.code === 'KEY_INVALID')) return error(403, err.code, err.message);
        ctx.log(`runcap-api: ${url.pathname.slice(0, 80)} failed: ${err instanceof Error ? err.message.slice(0, 200) : 'unknown'}`);
        return error(503, 'LEDGER_UNAVAILABLE', 'the ledger could not be read');
      }
    },
  };
}
