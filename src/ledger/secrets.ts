/**
 * Vault-key secrets and the approver passphrase. The key secret is 256 random
 * bits, stored only as its SHA-256 (a slow hash adds nothing to 256 bits of
 * entropy) and compared in constant time. The passphrase is human-chosen, so
 * it is stored as an scrypt hash.
 */
import { createHash, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import { monotonicFactory } from 'ulid';

/**
 * The ulid library asks the platform CSPRNG once per character (16 calls an id). Feed
 * it from a pooled buffer of crypto randomness instead: the same entropy, one call per
 * 2,048 ids' worth of characters.
 */
const POOL_BYTES = 32 * 1024;
let pool = randomBytes(POOL_BYTES);
let poolAt = 0;
function pooledRandom(): number {
  if (poolAt >= POOL_BYTES) {
    pool = randomBytes(POOL_BYTES);
    poolAt = 0;
  }
  return pool[poolAt++]! / 256;
}

const nextUlid = monotonicFactory(pooledRandom);

export function newId(prefix: 'vk' | 'res' | 'apr' | 'pk' | 'evt'): string {
  return `${prefix}_${nextUlid()}`;
}

const KEY_ID = 'vk_[0-9A-HJKMNP-TV-Z]{26}';
const KEY_PATTERN = new RegExp(`^(${KEY_ID})_([A-Za-z0-9_-]{43})$`);
const KEY_ID_PATTERN = new RegExp(`^${KEY_ID}$`);

export function newKeySecret(): string {
  return randomBytes(32).toString('base64url');
}

export function formatKey(id: string, secret: string): string {
  return `${id}_${secret}`;
}

/** Whether `text` is a key's public id alone (vk_<ulid>), without its secret. */
export function isKeyId(text: string): boolean {
  return KEY_ID_PATTERN.test(text);
}

/** Split a presented key into its public id and secret; undefined when malformed. */
export function parseKey(presented: string): { id: string; secret: string } | undefined {
  if (typeof presented !== 'string') return undefined;
  const m = KEY_PATTERN.exec(presented.trim());
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}

/** The public id of a presented key, or the empty string; safe to log. */
export function publicIdOf(presented: string): string {
  return parseKey(presented)?.id ?? '';
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** What an approver passphrase may be: long enough to resist guessing, short enough to hash at once. */
export const PASSPHRASE_LENGTH = { min: 8, max: 1024 } as const;
export const PASSPHRASE_LENGTH_RULE = `the approver passphrase must be ${PASSPHRASE_LENGTH.min} to ${PASSPHRASE_LENGTH.max} characters`;

export function passphraseLengthOk(passphrase: unknown): passphrase is string {
  return typeof passphrase === 'string' && passphrase.length >= PASSPHRASE_LENGTH.min && passphrase.length <= PASSPHRASE_LENGTH.max;
}

const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
/** log2 of scrypt's N: 15 (about 150 ms here) unless a ledger is told otherwise; never below 10. */
export const PASSPHRASE_COST = { standard: 15, least: 10, most: 17 } as const;

/** A hash keeps its own parameters, so lowering the cost for new hashes (tests) leaves checking any other as it was. */
export function hashPassphrase(passphrase: string, logN: number = PASSPHRASE_COST.standard): string {
  if (!Number.isInteger(logN) || logN < PASSPHRASE_COST.least || logN > PASSPHRASE_COST.most) throw new RangeError(`scrypt cost 2^${logN} is outside 2^${PASSPHRASE_COST.least}..2^${PASSPHRASE_COST.most}`);
  const salt = randomBytes(16);
  const params = { ...SCRYPT, N: 1 << logN };
  const hash = scryptSync(passphrase.normalize('NFC'), salt, 32, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export function passphraseMatches(passphrase: string, stored: string): boolean {
  const [kind, n, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const got = scryptSync(passphrase.normalize('NFC'), Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  });
  return timingSafeEqual(got, expected);
}
