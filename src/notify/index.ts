/** The notifier a server process runs beside its work, when config.json names notification endpoints. */
import { subscriptionsOf, type Guard } from '../guard/index.js';
import { startNotifier, type Notifier } from './deliver.js';

export type { Notifier } from './deliver.js';

export function startNotifierFor(guard: Guard, log: (line: string) => void): Notifier {
  const subscriptions = subscriptionsOf(guard.config);
  if (subscriptions.length === 0) return { stop: async () => {} };
  return startNotifier({ ledger: guard.ledger, notify: guard.config.notify, subscriptions, log });
}
