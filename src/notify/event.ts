/**
 * A notification as it is delivered: what the outbox queued (ledger), completed at delivery with
 * what the ledger knows of its approval, and a link to the dashboard at notify.dashboard_url.
 * Every text field that an agent could have written (labels, descriptions, parameters, reasons
 * quoted from a request) is marked as such in its comment: a format must show it inert.
 * Holds no secret: no vault key, no vendor credential, no endpoint's URL or secret.
 */
import type { NotifyEventKind } from '../config.js';

export interface NotifiedKey {
  id: string;
  /** agent-influenced: a child's label is written by whoever made the child (an agent may delegate) */
  label: string;
  /** who issued the key (a human's name, or the parent key's label for a child): agent-influenced for children */
  issuer: string | null;
}

export interface ApprovalFacts {
  id: string;
  action: string;
  /** USD, as a decimal string ("12.50") */
  amount_usd: string;
  /** the amount in the vendor's currency when it is not USD, e.g. "11.50 EUR at 1.087 USD/EUR" */
  vendor_amount: string | null;
  /** agent-written: the payment's description, the SMS body's first line, the e-mail subject (null when none) */
  description: string | null;
  /** agent-written: who the call would reach (phone numbers, e-mail addresses) */
  recipients: string[];
  /** why the key's policy asks a human (runcap's words) */
  reason: string;
  /** ISO 8601 UTC */
  expires_at: string;
}

interface Base<K extends NotifyEventKind> {
  /** evt_<ulid>: a receiver drops a repeat by it (delivery is at least once) */
  id: string;
  type: K;
  /** ISO 8601 UTC: when the ledger recorded what is told */
  created_at: string;
  key: NotifiedKey | null;
  /** the dashboard page to open (notify.dashboard_url), or null when none is configured */
  link: string | null;
}

export type NotificationEvent =
  | (Base<'approval_requested'> & { approval: ApprovalFacts })
  | (Base<'approval_decided'> & {
      approval: ApprovalFacts;
      decision: 'approved' | 'denied';
      /** who answered (the approver's name as the ledger recorded it) and how: passphrase or passkey */
      decided_by: string;
      method: string | null;
      /** the approver's reason for a denial (a human wrote it), or null */
      deny_reason: string | null;
    })
  | (Base<'cap_threshold'> & {
      cap: {
        /** e.g. "daily cap of key-label" or "daily cap for stripe.payment_intents.create of all runs" (runcap's words around agent-influenced labels) */
        description: string;
        window: 'daily' | 'monthly' | 'total';
        /** the window: "2026-12-03" (daily), "2026-12" (monthly), "" (total) */
        window_key: string;
        threshold_percent: 50 | 80 | 100;
        limit_usd: string;
        used_usd: string;
        /** allowed_call: an allowed call brought the cap's use to the threshold; denied_call: a call was refused CAP_EXCEEDED on it */
        trigger: 'allowed_call' | 'denied_call';
      };
    })
  | (Base<'key_revoked'> & {
      /** the human's reason (written by a human, or by an orchestrator for a child) */
      reason: string;
      revoked_by: string;
      /** the key whose revocation cascaded here (itself when it was the one revoked) */
      root_key_id: string;
    })
  | (Base<'vendor_uncertain'> & {
      reservation_id: string;
      action: string;
      amount_usd: string;
      vendor_ref: string | null;
      /** runcap's words: why the outcome is unknown (a 5xx, a dropped connection, a deadline) */
      why: string;
    });
