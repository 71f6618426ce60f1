// An app for herd's invocation tests, on Node's http module alone: every request is answered
// with JSON {service, instance, seen, method, url, body, caller, callee, token, traceparent},
// where seen counts the requests this instance got so far; the status is 200, or the number in
// a `status=` query parameter. Listens on $PORT.
"use strict";
const http = require("http");

let seen = 0;

const server = http.createServer((req, res) => {
  seen += 1;
  const status = /[?&]status=(\d{3})/.exec(req.url);
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    res.statusCode = status ? Number(status[1]) : 200;
    res.setHeader("content-type", "application/json");
    res.end(
      JSON.stringify({
        service: process.env.HERD_SERVICE,
        instance: Number(process.env.HERD_INSTANCE),
        seen,
        method: req.method,
        url: req.url,
        body,
        caller: req.headers["dapr-caller-app-id"] || null,
        callee: req.headers["dapr-callee-app-id"] || null,
        token: req.headers["dapr-api-token"] || null,
        traceparent: req.headers["traceparent"] || null,
      }),
    );
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
