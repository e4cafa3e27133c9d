/**
 * Setup of every file of the `postgres` project (vitest.config.ts): the server must answer. Under
 * CI=true one that does not fails the file; elsewhere each test is skipped with the reason.
 */
import { beforeEach } from 'vitest';
import { postgresForTests } from './postgres.js';

const postgres = await postgresForTests();

beforeEach((ctx) => {
  if (postgres.skipReason !== undefined) ctx.skip(postgres.skipReason);
});
