/**
 * simControl(url): drive a simulator running in another process over its /__sim HTTP API.
 */
import type { CreatedObjects, EmailFilter, FaultRule, RecordedRequest } from './types.js';

export interface SimControl {
  url: string;
  requests(): Promise<RecordedRequest[]>;
  created(): Promise<CreatedObjects>;
  inject(rule: FaultRule): Promise<void>;
  clearFaults(): Promise<void>;
  setPrice(messageSid: string, price: string): Promise<void>;
  findEmails(filter: EmailFilter): Promise<any[]>;
  openResponses(): Promise<number>;
  reset(): Promise<void>;
  health(): Promise<boolean>;
}

export function simControl(url: string): SimControl {
  const base = new URL(url);
  if (base.protocol !== 'http:') throw new Error(`simControl: expected an http:// URL, got ${url}`);
  const origin = base.origin;

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: { accept: 'application/json' } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { accept: 'application/json', 'content-type': 'application/json' };
    }
    const res = await fetch(origin + path, init);
    const text = await res.text();
    const parsed: unknown = text === '' ? undefined : JSON.parse(text);
    if (!res.ok) {
      const msg = (parsed as { error?: unknown } | undefined)?.error;
      throw new Error(`vendor-sim ${method} ${path}: HTTP ${res.status}${msg ? `: ${String(msg)}` : ''}`);
    }
    return parsed as T;
  }

  return {
    url: origin,
    requests: () => call<RecordedRequest[]>('GET', '/__sim/requests'),
    created: () => call<CreatedObjects>('GET', '/__sim/created'),
    inject: async (rule) => {
      // JSON has no Infinity: send -1.
      const wire = { ...rule, times: rule.times === Infinity ? -1 : rule.times };
      await call('POST', '/__sim/faults', wire);
    },
    clearFaults: async () => {
      await call('DELETE', '/__sim/faults');
    },
    setPrice: async (sid, price) => {
      await call('POST', '/__sim/price', { sid, price });
    },
    findEmails: (filter) => {
      const sp = new URLSearchParams();
      if (filter.tag) sp.set('tag', filter.tag.value === undefined ? filter.tag.name : `${filter.tag.name}:${filter.tag.value}`);
      if (filter.to !== undefined) sp.set('to', filter.to);
      const qs = sp.toString();
      return call<any[]>('GET', `/__sim/emails${qs ? `?${qs}` : ''}`);
    },
    openResponses: async () => (await call<{ open: number }>('GET', '/__sim/open')).open,
    reset: async () => {
      await call('POST', '/__sim/reset');
    },
    health: async () => {
      try {
        return (await call<{ ok?: boolean }>('GET', '/__sim/health')).ok === true;
      } catch {
        return false;
      }
    },
  };
}
