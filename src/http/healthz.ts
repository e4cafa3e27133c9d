/** GET /healthz: liveness and the refused requests per reason, nothing else (no key, no budget). */
import { jsonAnswer } from './answers.js';
import type { Refusals } from './refusals.js';
import type { Route } from './route.js';

export function healthzRoute(refusals: Refusals): Route {
  return {
    name: 'healthz',
    matches: (url) => url.pathname === '/healthz',
    async handle(request) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return jsonAnswer(405, { error: { code: 'INVALID_INPUT', message: 'GET /healthz' } }, { Allow: 'GET, HEAD' });
      return jsonAnswer(200, { status: 'ok', refused: refusals.snapshot() });
    },
  };
}
