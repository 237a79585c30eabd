// The local service behind every chain, run as its own child process (forked by the harness) so it
// neither shares an event loop with the load generator nor with the processes being measured.
//
// Tiny protocol: the first byte a client sends picks the mode.
//   'E'          echo every later byte back; on the client's FIN, FIN back.
//   'U'          upload: count every later byte; on the client's FIN, answer the total as ASCII
//                decimal + "\n" and close. The client derives MB/s from it, so buffered bytes
//                still sitting in a proxy are not counted as delivered.
//   'D' + u64be  download: send that many bytes (or until the client goes away), then FIN.
// Anything else: the connection is closed.
import net from 'node:net';
import { HOST } from './common.js';

// One shared source buffer for downloads: the service should cost as little CPU as possible so
// that differences between chains show up, and this avoids an allocation per write.
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

function handle(sock: net.Socket): void {
  sock.setNoDelay(true);
  // Resets are normal here (download clients stop by destroying their socket).
  sock.on('error', () => sock.destroy());
  let header: Buffer = Buffer.alloc(0);

  const onHeader = (chunk: Buffer): void => {
    header = header.length === 0 ? chunk : Buffer.concat([header, chunk]);
    const mode = header[0];
    if (mode === 0x45 /* E */) {
      sock.off('data', onHeader);
      startEcho(sock, header.subarray(1));
    } else if (mode === 0x55 /* U */) {
      sock.off('data', onHeader);
      startUpload(sock, header.length - 1);
    } else if (mode === 0x44 /* D */) {
      if (header.length < 9) return; // wait for the rest of the length
      sock.off('data', onHeader);
      startDownload(sock, Number(header.readBigUInt64BE(1)));
    } else {
      sock.destroy();
    }
  };
  sock.on('data', onHeader);
}

function startEcho(sock: net.Socket, rest: Buffer): void {
  if (rest.length > 0) sock.write(rest);
  // pipe() to itself handles backpressure and ends our side when the client ends its side.
  sock.pipe(sock);
}

function startUpload(sock: net.Socket, already: number): void {
  let total = already;
  sock.on('data', (c: Buffer) => {
    total += c.length;
  });
  sock.on('end', () => sock.end(`${total}\n`));
}

function startDownload(sock: net.Socket, n: number): void {
  let left = n;
  let closed = false;
  sock.on('close', () => {
    closed = true;
  });
  // Still read (and drop) whatever the client sends, so its FIN is seen.
  sock.on('data', () => {});
  sock.on('end', () => {
    closed = true;
    sock.destroy();
  });
  const pump = (): void => {
    while (!closed && left > 0) {
      const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= piece.length;
      if (!sock.write(piece)) {
        sock.once('drain', pump);
        return;
      }
    }
    if (!closed) sock.end();
  };
  pump();
}

// allowHalfOpen: the upload mode answers after the client's FIN, so our side must stay writable.
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, handle);
server.maxConnections = 1_000_000;
server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('unexpected address');
  if (process.send) process.send({ type: 'ready', port: addr.port });
  else process.stdout.write(`listening on ${addr.port}\n`);
});

// The harness disconnects IPC (or dies): the service must not outlive it.
process.on('disconnect', () => process.exit(0));
