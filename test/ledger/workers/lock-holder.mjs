// Holds the write lock of a SQLite file (BEGIN IMMEDIATE) from another OS process
// until its stdin closes. Prints "locked" once it holds it.
import Database from 'better-sqlite3';

const db = new Database(process.argv[2]);
db.exec('BEGIN IMMEDIATE');
process.stdout.write('locked\n');
process.stdin.resume();
process.stdin.on('end', () => {
  db.exec('ROLLBACK');
  db.close();
  process.exit(0);
});
