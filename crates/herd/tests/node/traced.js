// An app for herd's tracing tests, on Node's http module alone.
//
// POST /order (through the gateway) invokes this same app's POST /publish through the sidecar
// API (/v1.0/invoke/$HERD_SERVICE/method/publish); POST /publish publishes its body to topic
// $TOPIC of pub/sub "pubsub". Each passes on the traceparent it received and answers 200 when
// the sidecar said yes. It subscribes to $TOPIC (GET /dapr/subscribe); every delivery to
// /orders is appended as one JSON line {id, traceparent} to $EVENTS_FILE. It also subscribes
// to $TOPIC-dropped at /nowhere, which answers 404: herd drops those messages.
"use strict";
const http = require("http");
const fs = require("fs");

const topic = process.env.TOPIC;

function sidecar(path, body, traceparent, done) {
  const headers = { "content-type": "application/json" };
  if (traceparent) headers["traceparent"] = traceparent;
  const req = http.request(
    {
      host: "127.0.0.1",
      port: Number(process.env.DAPR_HTTP_PORT),
      method: "POST",
      path,
      headers,
    },
    (res) => {
      res.resume();
      res.on("end", () => done(res.statusCode));
    },
  );
  req.on("error", () => done(599));
  req.end(body);
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    if (req.method === "GET" && req.url === "/dapr/subscribe") {
      res.setHeader("content-type", "application/json");
      res.end(
        JSON.stringify([
          { pubsubname: "pubsub", topic, route: "/orders" },
          { pubsubname: "pubsub", topic: `${topic}-dropped`, route: "/nowhere" },
        ]),
      );
      return;
    }
    if (req.method === "POST" && req.url === "/order") {
      const path = `/v1.0/invoke/${process.env.HERD_SERVICE}/method/publish`;
      sidecar(path, body, req.headers["traceparent"], (status) => {
        res.statusCode = status === 200 ? 200 : 502;
        res.end(JSON.stringify({ invoked: status }));
      });
      return;
    }
    if (req.method === "POST" && req.url === "/publish") {
      sidecar(`/v1.0/publish/pubsub/${topic}`, body, req.headers["traceparent"], (status) => {
        res.statusCode = status === 204 ? 200 : 502;
        res.end(JSON.stringify({ published: status }));
      });
      return;
    }
    if (req.method === "POST" && req.url === "/orders") {
      let event = {};
      try {
        event = JSON.parse(body);
      } catch (e) {}
      const line = JSON.stringify({ id: event.id, traceparent: req.headers["traceparent"] });
      fs.appendFileSync(process.env.EVENTS_FILE, line + "\n");
      res.statusCode = 200;
      res.end();
      return;
    }
    res.statusCode = 404;
    res.end();
  });
});

server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
