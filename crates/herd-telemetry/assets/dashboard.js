// herd's dashboard: polls /api/overview every second and redraws the tables. Plain DOM, no
// dependencies; every value is set as text, never as HTML.
"use strict";

const POLL_MS = 1000;

function fmtRate(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}
function fmtMs(x) {
  if (x === null || x === undefined) return "–";
  return x >= 100 ? x.toFixed(0) + " ms" : x >= 1 ? x.toFixed(1) + " ms" : x.toFixed(2) + " ms";
}
function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
function fmtUptime(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}
function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false }) + "." + String(ms % 1000).padStart(3, "0");
}

// A cell: [text, {cls, field, num}].
function cell(text, opts) {
  const td = document.createElement("td");
  td.textContent = text;
  if (opts && opts.cls) td.className = opts.cls;
  if (opts && opts.num) td.classList.add("num");
  if (opts && opts.field) td.dataset.field = opts.field;
  return td;
}

// Replaces the rows of table `id` with `rows`, each {key, cells}.
function fill(id, rows, columns) {
  const body = document.querySelector("#" + id + " tbody");
  const out = document.createDocumentFragment();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("none yet", { cls: "empty" });
    td.colSpan = columns;
    tr.appendChild(td);
    out.appendChild(tr);
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = r.key;
    r.cells.forEach((c) => tr.appendChild(c));
    out.appendChild(tr);
  }
  body.replaceChildren(out);
}

function draw(o) {
  const services = [];
  for (const s of o.services) {
    for (const i of s.instances) {
      services.push({
        key: s.name + "/" + i.id,
        cells: [
          cell(s.name), cell(String(i.id), { num: true }),
          cell(i.state, { cls: "s-" + i.state, field: "state" }),
          cell(i.pid === null ? "–" : String(i.pid), { num: true, field: "pid" }),
          cell(fmtUptime(i.uptime_ms), { num: true }),
          cell(String(i.restarts), { num: true, field: "restarts" }),
          cell(i.cpu_percent.toFixed(1) + "%", { num: true }),
          cell(fmtBytes(i.memory_bytes), { num: true }),
        ],
      });
    }
  }
  fill("services", services, 8);

  fill("routes", o.routes.map((r) => ({
    key: r.route,
    cells: [
      cell(r.route), cell(r.upstream),
      cell(fmtRate(r.rps), { num: true, field: "rps" }),
      cell(fmtMs(r.p50_ms), { num: true, field: "p50" }),
      cell(fmtMs(r.p99_ms), { num: true, field: "p99" }),
      cell(fmtRate(r.error_rps), { num: true, cls: r.error_rps > 0 ? "s-5xx" : "" }),
      cell(String(r.requests), { num: true, field: "requests" }),
      cell(String(r.errors), { num: true, field: "errors" }),
      cell(String(r.retries), { num: true }),
    ],
  })), 9);

  fill("endpoints", o.endpoints.map((e) => ({
    key: e.upstream + "/" + e.endpoint,
    cells: [
      cell(e.upstream), cell(e.endpoint),
      cell(e.breaker, { cls: "s-" + e.breaker, field: "breaker" }),
      cell(e.healthy === null ? "–" : e.healthy ? "healthy" : "unhealthy",
        { cls: e.healthy === null ? "" : e.healthy ? "s-healthy" : "s-unhealthy" }),
      cell(fmtRate(e.attempts_rps), { num: true }),
      cell(String(e.failures), { num: true }),
      cell(String(e.ejections), { num: true }),
    ],
  })), 7);

  fill("publishers", o.publishers.map((p) => ({
    key: p.pubsub,
    cells: [
      cell(p.pubsub), cell(fmtRate(p.rps), { num: true, field: "rps" }),
      cell(String(p.published), { num: true, field: "published" }),
      cell(String(p.errors), { num: true }),
    ],
  })), 4);

  fill("subscriptions", o.subscriptions.map((s) => ({
    key: s.pubsub + "/" + s.topic + "/" + s.app,
    cells: [
      cell(s.pubsub), cell(s.topic), cell(s.app),
      cell(fmtRate(s.rps), { num: true, field: "rps" }),
      cell(String(s.in_flight), { num: true, field: "in_flight" }),
      cell(String(s.delivered), { num: true, field: "delivered" }),
      cell(String(s.retries), { num: true }),
      cell(String(s.dead_letters), { num: true, field: "dead_letters", cls: s.dead_letters > 0 ? "s-5xx" : "" }),
      cell(String(s.dropped), { num: true }),
    ],
  })), 9);

  fill("stores", o.stores.map((s) => ({
    key: s.kind + "/" + s.store,
    cells: [
      cell(s.kind), cell(s.store),
      cell(fmtRate(s.rps), { num: true, field: "rps" }),
      cell(fmtMs(s.p50_ms), { num: true }), cell(fmtMs(s.p99_ms), { num: true }),
      cell(String(s.requests), { num: true, field: "requests" }),
      cell(String(s.errors), { num: true }),
    ],
  })), 7);

  fill("traces", o.traces.map((t, n) => ({
    key: String(n),
    cells: [
      cell(fmtTime(t.time_ms), { num: true }), cell(t.source), cell(t.target),
      cell(String(t.status), { num: true, cls: "s-" + Math.floor(t.status / 100) + "xx" }),
      cell(fmtMs(t.latency_ms), { num: true }),
      cell(t.trace_id || "–", { cls: "muted" }),
    ],
  })), 6);
}

let polls = 0;
async function poll() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/api/overview", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const o = await r.json();
    draw(o);
    polls++;
    document.body.dataset.polls = String(polls);
    status.dataset.state = "live";
    status.textContent = "live";
    document.getElementById("updated").textContent = "updated " + fmtTime(o.time_ms);
  } catch (e) {
    status.dataset.state = "down";
    status.textContent = "herd is not answering (" + e.message + ")";
  }
  setTimeout(poll, POLL_MS);
}
poll();
