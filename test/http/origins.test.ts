/**
 * The Host names and Origins a server answers, from the address it binds and the certificate it
 * serves: a wildcard bind (0.0.0.0) is reached by the names its certificate carries, never by
 * "0.0.0.0"; a name one label under a certificate's wildcard passes, two labels do not.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { certificateNames, originPolicy, originRefusal } from '../../src/http/origins.js';

const dir = mkdtempSync(join(tmpdir(), 'runcap-origins-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function certificate(name: string, subject: string, san?: string): Buffer {
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', subject, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`)];
  execFileSync('openssl', san ? [...args, '-addext', `subjectAltName=${san}`] : args, { stdio: 'ignore' });
  return readFileSync(join(dir, `${name}.pem`));
}

describe('certificateNames', () => {
  it('reads DNS and IP subject alternative names as a URL spells them, or the common name without any', () => {
    expect(certificateNames(certificate('sans', '/CN=ignored.test', 'DNS:Runcap.Internal,DNS:*.fleet.test,IP:10.0.0.5,IP:::1'))).toEqual(['runcap.internal', '*.fleet.test', '10.0.0.5', '[::1]']);
    expect(certificateNames(certificate('cn', '/CN=runcap.internal'))).toEqual(['runcap.internal']);
    expect(() => certificateNames('not a certificate')).toThrow();
  });
});

describe('originPolicy', () => {
  const names = ['runcap.internal', '*.fleet.test', '10.0.0.5'];
  const wildcard = originPolicy({ bound: '0.0.0.0', port: 8443, scheme: 'https', allowOrigins: [], certNames: names });

  it('a wildcard bind answers the certificate\'s names and loopback, not "0.0.0.0"', () => {
    for (const host of ['runcap.internal:8443', '10.0.0.5:8443', 'a.fleet.test:8443', '127.0.0.1:8443', 'localhost:8443']) expect(originRefusal({ host }, wildcard), host).toBeUndefined();
    for (const host of ['0.0.0.0:8443', 'a.b.fleet.test:8443', 'fleet.test:8443', 'rebind.example:8443', '10.0.0.6:8443']) expect(originRefusal({ host }, wildcard), host).toBe('host');
  });

  it('an Origin is one of those names with this scheme and port', () => {
    const host = 'runcap.internal:8443';
    // an allowed origin on the default port does not lend its port to the wildcard's names
    const allowing = originPolicy({ bound: '0.0.0.0', port: 8443, scheme: 'https', allowOrigins: ['https://ops.example'], certNames: names });
    expect(originRefusal({ host, origin: 'https://a.fleet.test' }, allowing)).toBe('origin');
    expect(originRefusal({ host, origin: 'https://ops.example' }, allowing)).toBeUndefined();
    for (const origin of ['https://runcap.internal:8443', 'https://a.fleet.test:8443']) expect(originRefusal({ host, origin }, wildcard), origin).toBeUndefined();
    for (const origin of ['http://runcap.internal:8443', 'https://runcap.internal', 'https://a.fleet.test:9000', 'https://a.b.fleet.test:8443', 'https://evil.example']) expect(originRefusal({ host, origin }, wildcard), origin).toBe('origin');
  });

  it('a loopback bind without a certificate answers loopback\'s names only, as before', () => {
    const loopback = originPolicy({ bound: '127.0.0.1', port: 8787, scheme: 'http', allowOrigins: [] });
    expect(originRefusal({ host: 'localhost:8787', origin: 'http://localhost:8787' }, loopback)).toBeUndefined();
    expect(originRefusal({ host: 'runcap.internal:8787' }, loopback)).toBe('host');
    expect(originRefusal({ host: '127.0.0.1:8787', origin: 'http://127.0.0.1:8788' }, loopback)).toBe('origin');
  });
});
