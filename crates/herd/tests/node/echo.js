// An app for herd's invocation tests, on Node's http module alone: every request is answered
// 200 with JSON {service, instance, method, url, body, caller, callee, token, traceparent}.
// Listens on $PORT.
"use strict";
const http = require("http");

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    res.setHeader("content-type", "application/json");
    res.end(
      JSON.stringify({
        service: process.env.HERD_SERVICE,
        instance: Number(process.env.HERD_INSTANCE),
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
