/**
 * The spend counters every reservation counts in besides its caps: by label, by spend group (a
 * vendor, or custom) and by UTC day; and the exact range the spend group's all-time counter
 * (MAX_GROUP_TOTAL) keeps every counter within.
 */
import { formatUsd, MAX_GROUP_TOTAL, spendGroupOf, type Windows } from '../../policy/rules.js';
import type { CounterKey } from './writes.js';

export function spendGroups(label: string, action: string, w: Windows): CounterKey[] {
  return [
    { scope: `spend-label:${label}`, windowKey: '' },
    { scope: spendGroupScope(action), windowKey: '' },
    { scope: `spend-day:${w.day}`, windowKey: '' },
  ];
}

/** The all-time counter of the call's spend group (its vendor, or custom), which MAX_GROUP_TOTAL bounds. */
export function spendGroupScope(action: string): string {
  return `spend-vendor:${spendGroupOf(action)}`;
}

export function spendGroupCounter(action: string): CounterKey {
  return { scope: spendGroupScope(action), windowKey: '' };
}

export function exactRangeMessage(action: string, used: number, estimate: number): string {
  const group = spendGroupOf(action);
  return (
    `${group === 'custom' ? 'custom actions' : group} may count at most ${formatUsd(MAX_GROUP_TOTAL)} over the ledger's life ` +
    `(2^53 − 1 micro-USD, shared by the vendors, is what runcap counts exactly) and ${formatUsd(used)} is used` +
    (estimate > 0 ? `; this call needs an estimated ${formatUsd(estimate)}` : '')
  );
}
