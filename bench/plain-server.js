// A Node.js app written the way most are, with nothing for herd beyond the usual: it takes the
// socket from fd 3 when started with one (systemd socket activation, LISTEN_FDS) and otherwise
// listens on PORT; on SIGTERM it only calls `server.close()` (no `Connection: close` draining),
// the graceful-shutdown snippet most apps already have. bench/cluster.sh and
// bench/robustness.sh (R1, R2) and the integration tests run it unchanged in both of herd's
// ways of serving a `listen` address (proxied, and `passthrough = true`), and under PM2.
//
// Every answer is JSON naming the process that served it: worker id, pid, method, path and the
// request body's length. PLAIN_DELAY_MS delays each answer (default 0).
'use strict';

const http = require('node:http');

const worker = Number(process.env.HERD_INSTANCE ?? process.env.NODE_APP_INSTANCE ?? 0);
const delay = Number(process.env.PLAIN_DELAY_MS ?? 0);

const server = http.createServer((req, res) => {
  let length = 0;
  req.on('data', (chunk) => {
    length += chunk.length;
  });
  req.on('end', () => {
    const answer = () => {
      res.setHeader('Content-Type', 'application/json');
      res.end(
        JSON.stringify({ worker, pid: process.pid, method: req.method, url: req.url, length }),
      );
    };
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  });
});

if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 }, () => console.log(`worker ${worker} listening on fd 3`));
} else {
  const port = Number(process.env.PORT ?? 3000);
  server.listen(port, '127.0.0.1', () => console.log(`worker ${worker} listening on ${port}`));
}

process.on('SIGTERM', () => server.close());
