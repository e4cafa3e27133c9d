import type { Fault, FaultRule, SimVendor } from './types.js';

const MAX_RULES = 1000;
const MAX_LATENCY_MS = 10 * 60 * 1000;
const MAX_TRICKLE_INTERVAL_MS = 60 * 1000;

interface ActiveRule {
  vendor: SimVendor | '*';
  fault: Fault;
  remaining: number;
  probability: number;
}

/** Validates a rule (from code or from JSON over HTTP) and returns a normalized copy. Throws on bad input. */
export function normalizeRule(input: unknown): Required<FaultRule> {
  if (!input || typeof input !== 'object') throw new Error('fault rule must be an object');
  const rule = input as Record<string, unknown>;
  const vendor = rule['vendor'] ?? '*';
  if (vendor !== '*' && vendor !== 'stripe' && vendor !== 'twilio' && vendor !== 'resend') {
    throw new Error(`fault rule: unknown vendor ${String(vendor)}`);
  }
  let times = rule['times'] ?? 1;
  if (times === -1 || times === 'Infinity' || times === null) times = Infinity;
  if (typeof times !== 'number' || !(times === Infinity || (Number.isInteger(times) && times > 0))) {
    throw new Error('fault rule: times must be a positive integer, Infinity, or -1 (= Infinity)');
  }
  const probability = rule['probability'] ?? 1;
  if (typeof probability !== 'number' || !(probability >= 0 && probability <= 1)) {
    throw new Error('fault rule: probability must be a number in 0..1');
  }
  return { vendor, fault: normalizeFault(rule['fault']), times, probability };
}

function normalizeFault(input: unknown): Fault {
  if (!input || typeof input !== 'object') throw new Error('fault rule: fault must be an object');
  const f = input as Record<string, unknown>;
  const afterCreate = f['afterCreate'];
  if (afterCreate !== undefined && typeof afterCreate !== 'boolean') {
    throw new Error('fault: afterCreate must be a boolean');
  }
  switch (f['kind']) {
    case 'latency': {
      const ms = f['ms'];
      if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > MAX_LATENCY_MS) {
        throw new Error(`fault latency: ms must be a number in 0..${MAX_LATENCY_MS}`);
      }
      return { kind: 'latency', ms };
    }
    case 'status': {
      const status = f['status'];
      if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
        throw new Error('fault status: status must be an integer in 400..599');
      }
      return { kind: 'status', status, afterCreate: afterCreate === true };
    }
    case 'hang':
      return { kind: 'hang' };
    case 'trickle': {
      const intervalMs = f['intervalMs'];
      if (typeof intervalMs !== 'number' || !Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > MAX_TRICKLE_INTERVAL_MS) {
        throw new Error(`fault trickle: intervalMs must be an integer in 1..${MAX_TRICKLE_INTERVAL_MS}`);
      }
      return { kind: 'trickle', intervalMs };
    }
    case 'drop':
      return { kind: 'drop', afterCreate: afterCreate === true };
    default:
      throw new Error(`fault: unknown kind ${String(f['kind'])}`);
  }
}

/** The injected fault rules. The first matching rule whose probability roll succeeds applies. */
export class FaultBook {
  private rules: ActiveRule[] = [];

  constructor(private readonly random: () => number = Math.random) {}

  inject(rule: FaultRule): void {
    const r = normalizeRule(rule);
    if (this.rules.length >= MAX_RULES) throw new Error(`too many fault rules (max ${MAX_RULES})`);
    this.rules.push({ vendor: r.vendor, fault: r.fault, remaining: r.times, probability: r.probability });
  }

  clear(): void {
    this.rules = [];
  }

  /** Picks (and uses up one application of) the fault for a request to this vendor, if any. */
  take(vendor: SimVendor): Fault | undefined {
    for (let i = 0; i < this.rules.length; i++) {
      const rule = this.rules[i] as ActiveRule;
      if (rule.vendor !== '*' && rule.vendor !== vendor) continue;
      if (rule.probability < 1 && !(this.random() < rule.probability)) continue;
      rule.remaining -= 1;
      if (rule.remaining <= 0) this.rules.splice(i, 1);
      return rule.fault;
    }
    return undefined;
  }
}
