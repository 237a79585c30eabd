// The authorize hook the "relay+authorize" column talks to: a tiny HTTP server on 127.0.0.1 that
// allows everything. It runs as its own child process (forked by the harness), like the service,
// so its CPU is measured apart from relay's and it never shares an event loop with the white.
//
// Every POST is read to its end and answered `200 {"allow":true}` on a keep-alive connection:
// the cheapest answer a real hook could give, so what the column shows is relay's own cost of
// asking (one HTTP round trip per client connection, over its pool of kept-alive connections).
//
// IPC: sends {type:'ready', port} once listening; answers {type:'count'} with
// {type:'count', requests} (requests answered so far), so the harness can check that the hook
// really was consulted once per connection.
import http from 'node:http';
import { HOST } from './common.js';

const ANSWER = Buffer.from('{"allow":true}');
let requests = 0;

const server = http.createServer((req, res) => {
  // Read (and drop) the body so the connection can be reused for the next request.
  req.on('data', () => {});
  req.on('end', () => {
    requests += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': ANSWER.length });
    res.end(ANSWER);
  });
});
// Keep connections open across the pauses between measurements (relay's pool reconnects otherwise,
// which is harmless but not what a steady hook looks like).
server.keepAliveTimeout = 60_000;
server.maxRequestsPerSocket = 0;
server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('unexpected address');
  if (process.send) process.send({ type: 'ready', port: addr.port });
  else process.stdout.write(`listening on ${addr.port}\n`);
});

process.on('message', (m: unknown) => {
  if ((m as { type?: string } | null)?.type === 'count') process.send?.({ type: 'count', requests });
});
// The harness disconnects IPC (or dies): this server must not outlive it.
process.on('disconnect', () => process.exit(0));
