/**
 * The floor: one bare durable SQLite write transaction — BEGIN IMMEDIATE;
 * update a counter row; insert a row; COMMIT — in WAL mode with
 * synchronous=FULL, on the same file system as the ledger under test.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';

export interface Floor {
  /** one transaction; returns its duration in ms */
  once(): number;
  close(): void;
}

export function openFloor(dir: string, name = 'floor.db'): Floor {
  const db = new Database(join(dir, name));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
           CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, v TEXT NOT NULL);
           INSERT OR IGNORE INTO counters (id, n) VALUES (1, 0);`);
  const bump = db.prepare('UPDATE counters SET n = n + 1 WHERE id = 1');
  const insert = db.prepare('INSERT INTO events (at, v) VALUES (?, ?)');
  const payload = 'x'.repeat(200);
  return {
    once() {
      const t0 = performance.now();
      db.exec('BEGIN IMMEDIATE');
      bump.run();
      insert.run(Date.now(), payload);
      db.exec('COMMIT');
      return performance.now() - t0;
    },
    close: () => db.close(),
  };
}
