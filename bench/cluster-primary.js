// Node's cluster module as a peer in bench/cluster.sh (figure P3).
//
// The primary forks WORKERS workers (default 2); each loads examples/node-hello/server.js, which
// listens on PORT. The cluster module shares that port between the workers with Node's default
// scheduling policy (round-robin through the primary on Linux). On SIGTERM/SIGINT the primary
// passes SIGTERM to every worker (the app drains and exits) and exits once they are gone.
'use strict';

const cluster = require('node:cluster');
const path = require('node:path');

const count = Number(process.env.WORKERS ?? 2);

if (cluster.isPrimary) {
  let stopping = false;
  let alive = 0;
  for (let i = 0; i < count; i++) {
    cluster.fork({ NODE_APP_INSTANCE: String(i) });
    alive++;
  }
  cluster.on('exit', (worker, code, signal) => {
    alive--;
    if (!stopping) console.error(`worker ${worker.process.pid} exited (${signal ?? code})`);
    if (stopping && alive === 0) process.exit(0);
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    if (alive === 0) process.exit(0);
    setTimeout(() => process.exit(0), 10_000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  require(path.resolve(__dirname, '../examples/node-hello/server.js'));
}
