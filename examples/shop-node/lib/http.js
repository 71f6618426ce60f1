// The HTTP side every shop service shares, on Node's http module: a small router, JSON bodies
// and answers, `GET /healthz` (503 until the service says it can serve), listening on the
// port herd gives the instance (`PORT`, herd.toml `port = "auto"`), and a graceful stop on
// SIGTERM: stop accepting, finish the requests (and deliveries) already started, then exit.
'use strict';

const http = require('node:http');

/** Largest request body read (orders have at most 20 lines; events are small). */
const MAX_BODY = 1024 * 1024;

/** An error answered with its status and `{"error": message}`. */
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A JSON answer. */
function json(status, body, headers = {}) {
  return { status, body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } };
}

/** `?limit=N`: an integer in 1..=max, `fallback` when absent; 400 otherwise. */
function limitOf(query, fallback = 100, max = 1000) {
  const raw = query.get('limit');
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!/^[0-9]+$/.test(raw) || n < 1 || n > max) {
    throw new HttpError(400, `limit must be an integer in 1..=${max}`);
  }
  return n;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * Serves `routes` (`[method, /^regex$/, async (ctx) => answer]`, first match wins; a handler's
 * `ctx` has `req`, `params` (the regex's groups, decoded), `query` (URLSearchParams), `text`
 * (the body), `json()` (the body parsed, 400 when it is not JSON) and `traceparent`). An answer
 * is `{status, body, headers}` (see `json`). `ready()` tells `/healthz`; `onStop` callbacks run
 * once SIGTERM arrived and the last request finished.
 */
function serve({ name, routes, ready = () => true }) {
  let inFlight = 0;
  let draining = false;
  const stoppers = [];

  const server = http.createServer(async (req, res) => {
    inFlight += 1;
    res.on('close', () => {
      inFlight -= 1;
      maybeExit();
    });
    let answer;
    try {
      answer = await dispatch(req);
    } catch (err) {
      if (err instanceof HttpError) {
        answer = json(err.status, { error: err.message });
      } else {
        console.error(`${name}: ${req.method} ${req.url}: ${err?.stack ?? err}`);
        answer = json(500, { error: String(err?.message ?? err) });
      }
    }
    const body = Buffer.from(answer.body ?? '', 'utf8');
    const headers = { ...answer.headers, 'content-length': body.length };
    if (draining) headers.connection = 'close';
    res.writeHead(answer.status, headers);
    res.end(body);
  });
  // Longer than herd's idle timeout for connections to an instance (60 s), so herd is the
  // side that closes an idle connection and never sends on one being closed here.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  async function dispatch(req) {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/healthz' && req.method === 'GET') {
      return ready() ? json(200, { status: 'ok' }) : json(503, { status: 'starting' });
    }
    let pathMatched = false;
    for (const [method, pattern, handler] of routes) {
      const m = pattern.exec(url.pathname);
      if (!m) continue;
      pathMatched = true;
      if (method !== req.method) continue;
      const text = await readBody(req);
      return handler({
        req,
        params: m.slice(1).map((p) => decodeURIComponent(p)),
        query: url.searchParams,
        text,
        json: () => {
          try {
            return JSON.parse(text);
          } catch {
            throw new HttpError(400, 'the body is not JSON');
          }
        },
        traceparent: req.headers.traceparent,
      });
    }
    return pathMatched ? json(405, { error: 'method not allowed' }) : json(404, { error: 'not found' });
  }

  let exiting = false;
  function maybeExit() {
    if (!draining || inFlight > 0 || exiting) return;
    exiting = true;
    Promise.allSettled(stoppers.map((stop) => stop())).then(() => process.exit(0));
  }

  process.on('SIGTERM', () => {
    if (draining) return;
    draining = true;
    server.close(() => maybeExit());
    server.closeIdleConnections();
    maybeExit();
  });

  const port = Number(process.env.PORT ?? process.env.APP_PORT);
  server.listen(port, '127.0.0.1', () => console.log(`${name}: listening on 127.0.0.1:${port}`));
  return { onStop: (stop) => stoppers.push(stop) };
}

module.exports = { serve, json, limitOf, HttpError };
