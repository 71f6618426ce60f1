// The seed's example in Node.js, run by herd in cluster mode:
//   herd -c examples/node-hello/herd.toml up
//
// Under herd the shared socket arrives as fd 3 (systemd socket activation) and the worker id
// as HERD_INSTANCE. Started alone (or by Node's cluster module or PM2) it listens on PORT.
//
// On SIGTERM it keeps answering for HELLO_DRAIN_MS with `Connection: close`, so keep-alive
// clients move to another instance by themselves, then stops listening and exits once the
// open connections are done.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');

const worker = Number(process.env.HERD_INSTANCE ?? process.env.NODE_APP_INSTANCE ?? 0);
const delay = Number(process.env.HELLO_DELAY_MS ?? 100);
const drainMs = Number(process.env.HELLO_DRAIN_MS ?? 500);
let draining = false;

function traceId(req) {
  const tp = req.headers.traceparent;
  if (typeof tp === 'string') {
    const id = tp.split('-')[1];
    if (id && /^[0-9a-f]{32}$/i.test(id)) return id;
  }
  const rid = req.headers['x-request-id'];
  if (typeof rid === 'string' && rid.length > 0 && rid.length <= 128) return rid;
  return crypto.randomBytes(16).toString('hex');
}

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  if (req.url === '/healthz') {
    res.end('ok\n');
    return;
  }
  const id = traceId(req);
  setTimeout(() => {
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('x-request-id', id);
    res.end(JSON.stringify({ message: 'Hello from distributed node', worker, traceId: id }));
  }, delay);
});

if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 }, () => console.log(`worker ${worker} listening on fd 3`));
} else {
  const port = Number(process.env.PORT ?? 3000);
  server.listen(port, '127.0.0.1', () => console.log(`worker ${worker} listening on ${port}`));
}

process.on('SIGTERM', () => {
  draining = true;
  console.log(`worker ${worker} draining`);
  setTimeout(() => {
    server.close(() => {
      console.log(`worker ${worker} stopped`);
      process.exit(0);
    });
    server.closeIdleConnections();
  }, drainMs);
});
