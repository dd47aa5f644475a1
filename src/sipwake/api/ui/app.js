// sipwake admin console: plain DOM, no build step. Data comes from /admin/calls with the
// bearer token the operator types (kept in sessionStorage for this tab only). Every value
// from the server goes in through textContent / setAttribute, never as HTML.
"use strict";

const COLORS = {
  invite: "#1d2330", provisional: "#8a94a6", push_sent: "#e8710a", push_answer: "#f5a623",
  wake_register: "#1a73e8", branch: "#188038", response: "#0b8043", decline: "#d93025",
  cancel: "#b3261e",
  final: "#6a1b9a", ended: "#7a8394",
};
const LABELS = {
  invite: "INVITE in", provisional: "provisional", push_sent: "push sent",
  push_answer: "push answered", wake_register: "wake REGISTER", branch: "INVITE forwarded",
  response: "branch response", decline: "declined by app", cancel: "CANCEL", final: "final answer", ended: "ended",
};
const SVG = "http://www.w3.org/2000/svg";

function token() { return sessionStorage.getItem("sipwake-token") || ""; }

async function api(path) {
  const resp = await fetch(path, { headers: { authorization: "Bearer " + token() } });
  if (resp.status === 401) { throw new Error("wrong token"); }
  if (!resp.ok) { throw new Error(path + ": " + resp.status); }
  return resp.json();
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) { node.textContent = String(text); }
  for (const [k, v] of Object.entries(attrs || {})) { node.setAttribute(k, v); }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) { node.setAttribute(k, String(v)); }
  if (text !== undefined) { node.textContent = String(text); }
  return node;
}

function utc(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
}

async function loadCalls() {
  const data = await api("/admin/calls");
  const held = document.getElementById("held");
  held.replaceChildren();
  for (const c of data.calls) {
    const tr = el("tr", null, { "data-call": c.call_id });
    tr.append(el("td", c.call_id), el("td", c.aor), el("td", c.state || "held"),
      el("td", Object.keys(c.devices || {}).length));
    tr.addEventListener("click", () => showCall(c.call_id));
    held.append(tr);
  }
  document.getElementById("held-count").textContent = "(" + data.calls.length + ")";
  const recent = document.getElementById("recent");
  recent.replaceChildren();
  for (const c of data.recent || []) {
    const tr = el("tr", null, { "data-call": c.call_id });
    tr.append(el("td", utc(c.started)), el("td", c.aor), el("td", c.status || c.state),
      el("td", c.duration_ms === null ? "-" : c.duration_ms + " ms"), el("td", c.devices),
      el("td", c.call_id, { class: "muted" }));
    tr.addEventListener("click", () => showCall(c.call_id));
    recent.append(tr);
  }
  document.getElementById("recent-count").textContent = "(" + (data.recent || []).length + ")";
}

function lanesOf(call) {
  // Row 0 is the caller's side (INVITE, provisionals, final answer); one row per device.
  const lanes = ["caller"];
  for (const d of call.devices) { lanes.push(d.device); }
  for (const e of call.events) { if (e.device && !lanes.includes(e.device)) { lanes.push(e.device); } }
  return lanes;
}

function drawWaterfall(call) {
  const root = document.getElementById("waterfall");
  root.replaceChildren();
  const lanes = lanesOf(call);
  const width = Math.max(root.getBoundingClientRect().width || 900, 600);
  const left = 230, right = 30, top = 24, laneH = 34;
  const end = Math.max(1, ...call.events.map((e) => e.t_ms));
  const x = (ms) => left + (width - left - right) * (ms / end);
  root.setAttribute("height", top + lanes.length * laneH + 10);
  root.setAttribute("data-end-ms", end);
  // Time axis: five ticks.
  const axis = svg("g", { class: "axis" });
  for (let i = 0; i <= 5; i++) {
    const ms = (end * i) / 5;
    axis.append(svg("line", { x1: x(ms), x2: x(ms), y1: top - 6, y2: top + lanes.length * laneH }));
    axis.append(svg("text", { x: x(ms), y: top - 10, "text-anchor": "middle" }, ms.toFixed(0) + " ms"));
  }
  root.append(axis);
  lanes.forEach((lane, i) => {
    const y = top + i * laneH;
    const row = svg("g", { class: "row", "data-device": lane });
    row.append(svg("rect", { class: "lane", x: left, y: y + 4, width: width - left - right, height: laneH - 8 }));
    const name = lane === "caller" ? "caller / call" : lane.length > 34 ? lane.slice(0, 31) + "..." : lane;
    row.append(svg("text", { x: 6, y: y + laneH / 2 + 4 }, name));
    const events = call.events.filter((e) => (e.device || "caller") === lane);
    // Spans: push sent -> answered, wake REGISTER -> INVITE forwarded -> last response.
    const first = (kind) => events.find((e) => e.event === kind);
    const spans = [[first("push_sent"), first("push_answer"), COLORS.push_sent],
      [first("push_sent"), first("wake_register"), "#fde7c8"],
      [first("branch"), events.filter((e) => e.event === "response").pop(), "#cdebd7"]];
    for (const [a, b, color] of spans) {
      if (a && b && b.t_ms >= a.t_ms) {
        row.append(svg("rect", { class: "span", x: x(a.t_ms), y: y + 11, height: laneH - 22,
          width: Math.max(2, x(b.t_ms) - x(a.t_ms)), fill: color, opacity: 0.6 }));
      }
    }
    for (const e of events) {
      const mark = svg("g", { class: "mark", "data-event": e.event, "data-ms": e.t_ms });
      mark.append(svg("circle", { cx: x(e.t_ms), cy: y + laneH / 2, r: 5, fill: COLORS[e.event] || "#444" }));
      const title = svg("title", {}, "+" + e.t_ms + " ms " + (LABELS[e.event] || e.event) + " " + (e.detail || ""));
      mark.append(title);
      row.append(mark);
    }
    root.append(row);
  });
}

async function showCall(callId) {
  const call = await api("/admin/calls/" + encodeURIComponent(callId));
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").textContent =
    "Call " + call.call_id + " to " + call.aor + ": " + (call.status || call.state) +
    (call.duration_ms !== null ? " after " + call.duration_ms + " ms" : "");
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  for (const [kind, color] of Object.entries(COLORS)) {
    const item = el("span", LABELS[kind]);
    const swatch = el("i");
    swatch.style.background = color;
    item.prepend(swatch);
    legend.append(item);
  }
  drawWaterfall(call);
  const body = document.getElementById("events");
  body.replaceChildren();
  for (const e of call.events) {
    const tr = el("tr", null, { "data-event": e.event });
    tr.append(el("td", e.t_ms.toFixed(1)), el("td", LABELS[e.event] || e.event),
      el("td", e.device, { class: "muted" }), el("td", e.detail));
    body.append(tr);
  }
  document.getElementById("detail").setAttribute("data-call", call.call_id);
}

async function openConsole() {
  const error = document.getElementById("login-error");
  try {
    await loadCalls();
    error.textContent = "";
    document.getElementById("login").hidden = true;
    document.getElementById("calls").hidden = false;
  } catch (err) {
    error.textContent = err.message;
  }
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("sipwake-token", document.getElementById("token").value);
  openConsole();
});
if (token()) { openConsole(); }
setInterval(() => { if (!document.getElementById("calls").hidden) { loadCalls().catch(() => {}); } }, 5000);
