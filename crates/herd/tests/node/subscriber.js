// A subscriber app for herd's pub/sub tests, on Node's http module alone.
//
// GET /dapr/subscribe answers the JSON in $SUBSCRIPTIONS (or []). Every POST is a delivery: one
// JSON line {path, id, type, subject, attributes, data, instance, traceparent} is appended to
// $EVENTS_DIR/<service>-<instance>.jsonl, and the answer follows the event's data.action:
// "fail" -> 500, "drop" -> {"status":"DROP"}, "retry-once" -> {"status":"RETRY"} the first time
// this instance sees the event id, "slow" -> answers after 300 ms, "hang" -> never answers;
// anything else -> 200. A bulk delivery (Dapr's bulk envelope) is answered per entry alike.
"use strict";
const http = require("http");
const fs = require("fs");
const path = require("path");

const file = path.join(
  process.env.EVENTS_DIR,
  `${process.env.HERD_SERVICE}-${process.env.HERD_INSTANCE}.jsonl`,
);
const seen = new Set();
let hung = 0; // requests never answered ("hang")

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    if (req.method === "GET" && req.url === "/dapr/subscribe") {
      res.setHeader("content-type", "application/json");
      res.end(process.env.SUBSCRIPTIONS || "[]");
      return;
    }
    if (req.method !== "POST") {
      res.statusCode = 200;
      res.end("ok");
      return;
    }
    let event = {};
    try {
      event = JSON.parse(body);
    } catch (e) {
      event = { raw: body };
    }
    if (event.type === "com.dapr.event.sent.bulk") return bulk(req, res, event);
    const line = JSON.stringify({
      path: req.url,
      id: event.id,
      type: event.type,
      subject: event.subject,
      attributes: Object.keys(event).sort(),
      data: event.data,
      instance: process.env.HERD_INSTANCE,
      traceparent: req.headers["traceparent"],
      contentType: req.headers["content-type"],
    });
    fs.appendFileSync(file, line + "\n");
    const action = event.data && event.data.action;
    const reply = (status, json) => {
      res.statusCode = status;
      if (json) res.setHeader("content-type", "application/json");
      res.end(json ? JSON.stringify(json) : "");
    };
    if (action === "fail") return reply(500);
    if (action === "drop") return reply(200, { status: "DROP" });
    if (action === "retry-once" && !seen.has(event.id)) {
      seen.add(event.id);
      return reply(200, { status: "RETRY" });
    }
    if (action === "slow") return setTimeout(() => reply(200), 300);
    if (action === "hang") return void hung++;
    reply(200);
  });
});

// A bulk delivery (Dapr's envelope): one line per entry, with `bulk` = the batch's size, and a
// status per entry by the same actions (SUCCESS, DROP, RETRY).
function bulk(req, res, envelope) {
  const statuses = envelope.entries.map((entry) => {
    const event = entry.event || {};
    const line = JSON.stringify({
      path: req.url,
      id: event.id,
      type: event.type,
      data: event.data,
      instance: process.env.HERD_INSTANCE,
      contentType: entry.contentType,
      bulk: envelope.entries.length,
      topic: envelope.topic,
      pubsubname: envelope.pubsubname,
    });
    fs.appendFileSync(file, line + "\n");
    const action = event.data && event.data.action;
    let status = "SUCCESS";
    if (action === "fail") status = "RETRY";
    if (action === "drop") status = "DROP";
    if (action === "retry-once" && !seen.has(event.id)) {
      seen.add(event.id);
      status = "RETRY";
    }
    return { entryId: entry.entryId, status };
  });
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ statuses }));
}

server.listen(Number(process.env.PORT), "127.0.0.1");
// Requests left hanging would keep close() waiting for ever: then exit once it stopped listening.
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  if (hung > 0) setTimeout(() => process.exit(0), 100);
});
