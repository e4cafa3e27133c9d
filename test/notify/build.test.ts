import { describe, expect, it } from 'vitest';
import { dashboardLink } from '../../src/notify/build.js';

describe('dashboardLink', () => {
  it('opens the landing page under dashboard_url, keeping a path the dashboard is served under', () => {
    const id = 'apr_01JF8Z0000000000000000000A';
    expect(dashboardLink('http://localhost:7777', { approval: id })).toBe(`http://localhost:7777/open?to=approval&id=${id}`);
    expect(dashboardLink('https://ops.example/runcap', { approval: id })).toBe(`https://ops.example/runcap/open?to=approval&id=${id}`);
    expect(dashboardLink('https://ops.example/runcap/', 'runs')).toBe('https://ops.example/runcap/open?to=runs');
    expect(dashboardLink(null, 'audit')).toBeNull();
  });
});
