// bench/hosts/relay.js — the delay between regions in bench/hosts/net.sh, where the kernel has no
// `tc netem`. Runs in the router namespace: node relay.js ONE_WAY_MS PORT...
//
// Every host 10.213.R.X has a WAN address 10.213.(10+R).X on the router's lo, where hosts of the
// other region reach it; the relay listens on 0.0.0.0 on every port given, so the accepted
// socket's local address is the WAN address dialled, and connects on to the host behind it and copies both ways, holding every chunk ONE_WAY_MS before writing it (in
// order: Node runs timers of equal duration in the order they were set). Backpressure: a side
// whose peer has more than 1 MB unwritten stops being read until it drains. A side that ends or
// fails ends or destroys the other (half-closes pass through), so a refused or reset connection is seen by the dialler as a
// connection that closes. Prints "relay ready" once every port listens.
"use strict";
const net = require("net");

const oneWay = Number(process.argv[2]);
const ports = process.argv.slice(3).map(Number);
if (!Number.isFinite(oneWay) || oneWay < 0 || ports.length === 0 || ports.some((p) => !(p > 0))) {
  console.error("usage: node relay.js ONE_WAY_MS PORT...");
  process.exit(2);
}

// pipe(from, to): from's chunks written to `to` oneWay ms later, in order.
function pipe(from, to) {
  let pending = 0;
  from.on("data", (chunk) => {
    pending += chunk.length;
    if (pending > 1 << 20) from.pause();
    setTimeout(() => {
      pending -= chunk.length;
      if (!to.destroyed) to.write(chunk);
      if (pending <= 1 << 20 && from.isPaused()) from.resume();
    }, oneWay);
  });
  from.on("end", () => setTimeout(() => to.end(), oneWay));
  from.on("error", () => setTimeout(() => to.destroy(), oneWay));
}

let listening = 0;
for (const port of ports) {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (down) => {
    const wan = down.localAddress.replace(/^::ffff:/, "").split(".").map(Number);
    if (wan.length !== 4 || wan[2] < 10) { down.destroy(); return; }
    const host = `${wan[0]}.${wan[1]}.${wan[2] - 10}.${wan[3]}`;
    const up = net.connect({ host, port: down.localPort, allowHalfOpen: true });
    up.setNoDelay(true);
    down.setNoDelay(true);
    pipe(down, up);
    pipe(up, down);
    down.resume();
  });
  server.on("error", (e) => { console.error(`relay: port ${port}: ${e.message}`); process.exit(1); });
  server.listen(port, "0.0.0.0", () => {
    if (++listening === ports.length) console.log(`relay ready ${oneWay}ms ${ports.join(" ")}`);
  });
}
