// What a gray out of local ports tells its operator (src/engine/gray/local-ports.ts), for each
// state of the host's settings; the e2e test (e2e/local-ports.test.ts) runs the real thing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { localPortsAdvice } from '../../src/engine/gray/local-ports.js';

const settings = (values: Record<string, string | null>) => (name: string) => values[name] ?? null;

test('with reuse off: the rate the range sustains, and both remedies', () => {
  const a = localPortsAdvice('data', '203.0.113.7:7001', settings({ ip_local_port_range: '32768-60999', tcp_tw_reuse: '2' }));
  assert.equal(a.portRange, '32768-60999');
  assert.equal(a.twReuse, '2');
  assert.match(a.detail, /^no local port left for a data connection: every one of this host's 28232 ephemeral ports \(32768-60999\) is in use or in TIME_WAIT toward 203\.0\.113\.7:7001;/);
  assert.match(a.detail, /a data connection whose service closed first .* about 470 such clients a second toward one white; set net\.ipv4\.tcp_tw_reuse=1 \(it is 2;/);
  assert.match(a.detail, /widen net\.ipv4\.ip_local_port_range \(docs\/deploy\.md, "Local ports on the gray"\)$/);
});

test('with reuse on already: only a wider range helps', () => {
  const a = localPortsAdvice('service', '10.0.0.9:8080', settings({ ip_local_port_range: '40000-40099', tcp_tw_reuse: '1' }));
  assert.match(a.detail, /^no local port left for a connection to the service: every one of this host's 100 ephemeral ports/);
  assert.match(a.detail, /tcp_tw_reuse is 1 already, so the range is too small for the connections open at once: widen net\.ipv4\.ip_local_port_range/);
  assert.doesNotMatch(a.detail, /set net\.ipv4\.tcp_tw_reuse=1/);
});

test('settings unknown (no /proc): still the cause and both remedies, without figures', () => {
  const a = localPortsAdvice('service', '10.0.0.9:8080', settings({}));
  assert.equal(a.portRange, null);
  assert.equal(a.twReuse, null);
  assert.match(a.detail, /every one of this host's ephemeral ports is in use or in TIME_WAIT toward 10\.0\.0\.9:8080/);
  assert.match(a.detail, /a connection to the service whose client closed first .* about its range's worth of such clients a minute toward one service address; set net\.ipv4\.tcp_tw_reuse=1 \(it is unknown;/);
});
