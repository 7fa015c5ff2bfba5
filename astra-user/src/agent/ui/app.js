// Astra's web UI: plain DOM, no framework, no inline code (the page's CSP forbids it). Every
// value from the agent is put in the page as text, never as markup.
"use strict";

const WINDOW_MS = 15 * 60 * 1000;
const PAGE = 100;
const LISTS = ["block", "allow", "quarantine", "throttle", "protect"];
const LIST_PATH = {
  block: "blocklist",
  allow: "allowlist",
  quarantine: "quarantine",
  throttle: "throttle",
  protect: "protect",
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, kids);
  return e;
}

function append(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// Replaces an element's children; arrays among them are flattened (replaceChildren would
// print an array as text).
function fill(e, ...kids) {
  e.replaceChildren();
  return append(e, kids);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  append(e, kids);
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function si(n, unit = "") {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  for (const [f, p] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (a >= f) return (n / f).toFixed(a >= 10 * f ? 0 : 1) + " " + p + unit;
  }
  return (a >= 10 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)) + (unit ? " " + unit : "");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function dur(secs) {
  if (secs === null || secs === undefined) return "permanent";
  secs = Math.max(0, Math.round(secs));
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60), x = secs % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${x}s`;
  return `${x}s`;
}

// Local time as engineers write it: 2026-12-02 15:50:30.
function when(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function clock(ms, seconds) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, seconds ? 8 : 5);
}

function endpoint(addr, port) {
  return addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function toast(text, bad) {
  const t = el("div", { class: bad ? "toast bad" : "toast", role: bad ? "alert" : "status" }, text);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 5000);
}

// ---------------------------------------------------------------------------------------------
// The API

const auth = {
  get token() {
    return sessionStorage.getItem("astra.token") || "";
  },
  set token(t) {
    if (t) sessionStorage.setItem("astra.token", t);
    else sessionStorage.removeItem("astra.token");
  },
  role: "anonymous",
  readsNeedToken: false,
};

function headers(json) {
  const h = {};
  if (auth.token) h.Authorization = "Bearer " + auth.token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const r = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const msg = (data && data.error) || text || r.statusText;
    if (r.status === 401) refused();
    throw new ApiError(r.status, `${r.status}: ${msg}`);
  }
  return data;
}

// What a 401 means depends on whether a token was given.
function refused() {
  showBanner(auth.token
    ? "That token is wrong or was rotated: nothing can be changed with it. Paste a current one (astra token show)."
    : "This agent wants a token: paste the viewer's or the admin's above.");
}

function showBanner(text) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.hidden = !text;
}

async function whoami() {
  try {
    const w = await api("/api/v1/whoami");
    auth.role = w.role;
    auth.readsNeedToken = w.reads_need_token;
  } catch (e) {
    if (e.status !== 401) throw e;
    // A token that is no role's: wrong, or rotated since it was pasted.
    auth.role = "wrong token";
  }
  const r = document.getElementById("role");
  r.textContent = auth.role;
  r.className = "role " + auth.role.replace(" ", "-");
  document.body.classList.toggle("read-only", auth.role !== "admin");
  if (auth.role === "admin") showBanner("");
  else if (auth.role === "wrong token") refused();
  else if (auth.role === "viewer") showBanner("Read-only: this is the viewer's token. Changes need the admin's.");
  else if (auth.readsNeedToken) refused();
  else showBanner("Read-only: paste the admin token (astra token show) to make changes.");
}

// ---------------------------------------------------------------------------------------------
// The live stream: server-sent events read with fetch, so the token goes in a header and
// never in a URL.

const live = {
  samples: [],
  config: { poll_interval_ms: 1000, window_ms: WINDOW_MS },
  talkers: null,
  blocked: null,
  abort: null,
  listeners: new Set(),
};
// For the browser tests and the bench: when each sample reached the page and was drawn.
window.astra = { painted: [], firstPaint: null, errors: [] };

function onLive(fn) {
  live.listeners.add(fn);
  return () => live.listeners.delete(fn);
}

function emit(event, data) {
  for (const fn of live.listeners) {
    try {
      fn(event, data);
    } catch (e) {
      console.error(e);
    }
  }
}

function setConn(state) {
  const c = document.getElementById("conn");
  c.textContent = state;
  c.className = "conn " + (state === "live" ? "live" : state === "connecting" ? "" : "down");
}

async function runStream() {
  let backoff = 500;
  for (;;) {
    live.abort = new AbortController();
    try {
      const r = await fetch("/api/v1/stream", { headers: headers(false), signal: live.abort.signal, cache: "no-store" });
      if (!r.ok) throw new ApiError(r.status, `stream: ${r.status}`);
      setConn("live");
      backoff = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const raw = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (dispatch(raw) === "resync") throw new Error("resync");
        }
      }
    } catch (e) {
      if (e.status === 401) refused();
    }
    setConn("reconnecting");
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
}

function restartStream() {
  if (live.abort) live.abort.abort();
}

function dispatch(raw) {
  let event = "message";
  const data = [];
  for (const line of raw.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  if (!data.length) return event;
  let d;
  try {
    d = JSON.parse(data.join("\n"));
  } catch {
    return event;
  }
  const arrived = Date.now();
  if (event === "hello") {
    live.config = d.config || live.config;
    live.samples = d.samples || [];
  } else if (event === "sample") {
    live.samples.push(d);
    const cut = d.t - (live.config.window_ms || WINDOW_MS);
    while (live.samples.length && live.samples[0].t < cut) live.samples.shift();
  } else if (event === "summary") {
    live.talkers = d.talkers;
    if (d.blocked) live.blocked = d.blocked;
  } else if (event === "alert") {
    toast(`${d.attack_type.replace(/_/g, " ")} from ${d.source} (${d.severity})`, d.severity === "high" || d.severity === "critical");
  }
  emit(event, d);
  if (event === "sample") {
    requestAnimationFrame(() => {
      const p = window.astra.painted;
      p.push({ t: d.t, arrived, painted: Date.now() });
      if (p.length > 1000) p.shift();
    });
  }
  return event;
}

// ---------------------------------------------------------------------------------------------
// Charts: SVG built from the samples, redrawn at most once a frame.

const W = 640, H = 220, PAD = { l: 56, r: 8, t: 8, b: 24 };

function chart(title, { unit = "", toggle } = {}) {
  const box = el("div", { class: "card chart" });
  const head = el("div", { class: "chart-head" }, el("h2", {}, title));
  if (toggle) head.append(toggle);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const legend = el("div", { class: "legend" });
  box.append(head, svg, legend);
  return { box, svg, legend, unit, title };
}

function drawLines(c, series, { unit = c.unit, from, to } = {}) {
  const svg = c.svg;
  fill(svg);
  fill(c.legend);
  const all = series.flatMap((x) => x.points);
  if (!all.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
    return;
  }
  const t0 = from ?? Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(to ?? 0, ...all.map((p) => p[0]), t0 + 1);
  let ymax = Math.max(...all.map((p) => p[1]), 0);
  ymax = ymax > 0 ? ymax * 1.1 : 1;
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / ymax) * (H - PAD.t - PAD.b);
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "axis" }));
    svg.append(s("text", { x: PAD.l - 4, y: y(v) + 3, "text-anchor": "end" }, si(v, unit)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    svg.append(s("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, clock(t, t1 - t0 < 600000)));
  }
  series.forEach((ser, i) => {
    const color = `var(--c${i % 8})`;
    if (ser.points.length) {
      const d = ser.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 1.6, "data-series": ser.name }, s("title", {}, ser.name)));
      // A line of one or two points is all but invisible: mark them.
      if (ser.points.length < 3)
        for (const p of ser.points) svg.append(s("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: color }));
    }
    const last = ser.points.length ? ser.points[ser.points.length - 1][1] : 0;
    c.legend.append(el("span", { style: `--swatch: ${color}` }, `${ser.name}: ${si(last, unit)}`));
  });
}

function drawBars(c, bars, { unit = "", marker } = {}) {
  const svg = c.svg;
  fill(svg);
  if (!bars.length || bars.every((b) => !b.value)) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
    return;
  }
  const ymax = Math.max(...bars.map((b) => b.value)) * 1.1 || 1;
  const bw = (W - PAD.l - PAD.r) / bars.length;
  const y = (v) => H - PAD.b - (v / ymax) * (H - PAD.t - PAD.b);
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "axis" }));
    svg.append(s("text", { x: PAD.l - 4, y: y(v) + 3, "text-anchor": "end" }, si(v, unit)));
  }
  bars.forEach((b, i) => {
    const x = PAD.l + i * bw;
    svg.append(s("rect", { x: x + 1, y: y(b.value), width: Math.max(bw - 2, 1), height: H - PAD.b - y(b.value), fill: `var(--c${b.color ?? 0})` }, s("title", {}, `${b.label}: ${b.value}`)));
    if (bars.length <= 24 && i % Math.ceil(bars.length / 10) === 0)
      svg.append(s("text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle" }, b.label));
  });
  if (marker !== undefined) {
    const mx = PAD.l + marker * (W - PAD.l - PAD.r);
    svg.append(s("line", { x1: mx, x2: mx, y1: PAD.t, y2: H - PAD.b, stroke: "var(--bad)", "stroke-dasharray": "4 3" }));
  }
}

// Series of one measure from the samples: a key per rate, zero where a sample lacks it.
function seriesOf(samples, keyOf, valueOf) {
  const keys = new Map();
  for (const smp of samples) for (const r of smp.rates) {
    const k = keyOf(r);
    if (k !== null && !keys.has(k)) keys.set(k, []);
  }
  for (const smp of samples) {
    const sums = new Map();
    for (const r of smp.rates) {
      const k = keyOf(r);
      if (k !== null) sums.set(k, (sums.get(k) || 0) + valueOf(r));
    }
    for (const [k, pts] of keys) pts.push([smp.t, sums.get(k) || 0]);
  }
  return [...keys].sort((a, b) => a[0].localeCompare(b[0])).map(([name, points]) => ({ name, points }));
}

// Alerts of each type over the minute up to each sample: a rolling count, so a burst shows
// where it happened however short the window drawn.
function alertsPerMinute(samples) {
  const types = [...new Set(samples.flatMap((smp) => Object.keys(smp.alerts || {})))].sort();
  return types.map((t) => {
    const points = [];
    let sum = 0;
    let j = 0;
    for (let i = 0; i < samples.length; i++) {
      sum += (samples[i].alerts || {})[t] || 0;
      while (samples[j].t <= samples[i].t - 60000) sum -= (samples[j++].alerts || {})[t] || 0;
      points.push([samples[i].t, sum]);
    }
    return { name: t.replace(/_/g, " "), points };
  });
}

// ---------------------------------------------------------------------------------------------
// Views: each returns a cleanup function.

const views = {};

function card(title, ...kids) {
  return el("div", { class: "card" }, el("h2", {}, title), ...kids);
}

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function table(cols, rows, { empty = "nothing here", rowAttrs } = {}) {
  const t = el("table", {}, el("thead", {}, el("tr", {}, cols.map((c) => el("th", { class: c.num ? "num" : undefined, scope: "col" }, c.label)))));
  const body = el("tbody");
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: cols.length, class: "muted" }, empty)));
  for (const r of rows) {
    body.append(el("tr", rowAttrs ? rowAttrs(r) : {}, cols.map((c) => el("td", { class: c.num ? "num" : c.mono ? "mono" : undefined }, c.value(r)))));
  }
  t.append(body);
  return t;
}

views.overview = (root) => {
  // Packets, bytes or bits a second, in turn.
  const MODES = [["pps", "packets/s", ""], ["Bps", "bytes/s", "B"], ["bps", "bits/s", "b"]];
  let mode = 0;
  const toggle = el("button", { type: "button", title: "Packets, bytes or bits a second", "data-testid": "traffic-unit" }, "bytes/s");
  toggle.addEventListener("click", () => {
    mode = (mode + 1) % MODES.length;
    toggle.textContent = MODES[(mode + 1) % MODES.length][1];
    traffic.box.querySelector("h2").textContent = `Traffic (${MODES[mode][1]})`;
    schedule();
  });
  const traffic = chart("Traffic (packets/s)", { toggle });
  const drops = chart("Drops by reason (packets/s)");
  const flows = chart("Active flows");
  const alerts = chart("Alerts in the last minute, by type");
  const now = el("div", { class: "stats" });
  const health = el("div");
  const summary = el("div");
  const talkers = el("div");
  const blocked = el("div");
  root.append(
    el("h1", {}, "Overview"),
    el("div", { class: "grid" }, card("Now", now), card("Health", health), card("Attacks (24 h)", summary)),
    el("div", { class: "grid charts", style: "margin-top:1rem" }, traffic.box, drops.box, flows.box, alerts.box),
    el("div", { class: "grid", style: "margin-top:1rem" }, card("Top talkers", talkers), card("Top blocked", blocked)),
  );

  let queued = false;
  function schedule() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      draw();
    });
  }
  function draw() {
    const smp = live.samples;
    const to = smp.length ? smp[smp.length - 1].t : Date.now();
    // The window the samples cover, up to the stream's 15 minutes: a fresh agent's first
    // seconds fill the chart rather than sit at its right edge.
    const from = Math.max(smp.length ? smp[0].t : to, to - (live.config.window_ms || WINDOW_MS));
    const value = [(r) => r.pps, (r) => r.bps / 8, (r) => r.bps][mode];
    drawLines(traffic, seriesOf(smp, (r) => `${r.iface} ${r.dir} ${r.action}`, value), { unit: MODES[mode][2], from, to });
    drawLines(drops, seriesOf(smp, (r) => r.drop || null, (r) => r.pps), { from, to });
    drawLines(flows, [{ name: "flows", points: smp.map((x) => [x.t, x.flows_active]) }], { from, to });
    drawLines(alerts, alertsPerMinute(smp), { from, to });
    const last = smp[smp.length - 1];
    if (last) {
      const sum = (f, pred) => last.rates.filter(pred).reduce((a, r) => a + f(r), 0);
      fill(now, 
        el("div", {}, el("small", {}, "packets/s in"), el("span", { class: "big", "data-testid": "pps-in" }, si(sum((r) => r.pps, (r) => r.dir === "ingress")))),
        el("div", {}, el("small", {}, "bits/s in"), el("span", { class: "big" }, si(sum((r) => r.bps, (r) => r.dir === "ingress"), "b"))),
        el("div", {}, el("small", {}, "dropped/s"), el("span", { class: "big" }, si(sum((r) => r.pps, (r) => !!r.drop)))),
        el("div", {}, el("small", {}, "active flows"), el("span", { class: "big" }, si(last.flows_active))),
        el("div", {}, el("small", {}, "last poll"), el("span", { class: "big" }, `${last.poll_ms.toFixed(1)} ms`)),
      );
    }
    drawTalkers();
  }
  function drawTalkers() {
    if (live.talkers) {
      fill(talkers, table(
        [
          { label: "address", value: (r) => r.addr, mono: true },
          { label: "conversations", value: (r) => si(r.conversations), num: true },
          { label: "peers", value: (r) => r.peers, num: true },
          { label: "sent", value: (r) => bytes(r.bytes_sent), num: true },
          { label: "received", value: (r) => bytes(r.bytes_received), num: true },
        ],
        live.talkers,
      ));
    }
    {
      fill(blocked, table(
        [
          { label: "blocked", value: (r) => r.net, mono: true },
          { label: "dropped packets", value: (r) => si(r.hits), num: true },
        ],
        live.blocked || [],
        { empty: "no blocked source has sent anything" },
      ));
    }
  }
  async function loadStatic() {
    const [st, sum] = await Promise.all([api("/api/v1/status"), api("/api/v1/attack-summary")]);
    const a = st.agent;
    fill(health, kv([
      ["agent", st.agent_running ? "running" : "not running"],
      a && a.last_poll_at && ["last poll", `${dur(Date.now() / 1000 - a.last_poll_at)} ago, took ${a.last_poll_ms.toFixed(1)} ms`],
      a && ["version", a.version],
      a && ["interfaces", a.interfaces.map((i) => `${i.iface} (${i.mode}${i.egress ? ", egress" : ""})`).join(", ") || "none"],
      ["flows", `${si(st.flows)} of ${si(st.flow_capacity)}`],
      a && ["model", a.model ? a.model.state : "off"],
      a && ["mode", a.dry_run ? "dry run: alerts only" : "enforcing"],
      ["lists", `${st.block_entries} blocked, ${st.allow_entries} allowed, ${st.quarantine_entries} quarantined, ${st.throttle_entries} throttled, ${st.protect_entries} protected`],
      (st.store_error || (a && a.store_error)) && ["store", el("span", { class: "error" }, st.store_error || a.store_error)],
    ]));
    const types = Object.entries(sum.by_type || {});
    fill(summary, 
      el("div", { class: "stats" },
        el("div", {}, el("small", {}, "alerts"), el("span", { class: "big" }, sum.alerts)),
        el("div", {}, el("small", {}, "blocked"), el("span", { class: "big" }, sum.blocked))),
      table([
        { label: "type", value: (r) => r[0].replace(/_/g, " ") },
        { label: "alerts", value: (r) => r[1].alerts, num: true },
        { label: "blocked", value: (r) => r[1].blocked, num: true },
      ], types, { empty: "no attack seen" }),
    );
    if (!live.talkers) {
      live.talkers = await api("/api/v1/top-talkers?limit=10").catch(() => null);
      drawTalkers();
    }
  }
  draw();
  loadStatic().catch((e) => toast(e.message, true));
  const timer = setInterval(() => loadStatic().catch(() => {}), 10000);
  const off = onLive((ev) => {
    if (ev === "sample" || ev === "hello" || ev === "summary") schedule();
    if (ev === "alert" || ev === "lists") loadStatic().catch(() => {});
  });
  return () => {
    clearInterval(timer);
    off();
  };
};

function evidence(a) {
  const ev = a.evidence || {};
  const parts = [];
  if (ev.thresholds && ev.thresholds.length)
    parts.push(table([
      { label: "measure", value: (t) => t.name.replace(/_/g, " ") },
      { label: "value", value: (t) => si(t.value), num: true },
      { label: "threshold", value: (t) => si(t.threshold), num: true },
      { label: "window", value: (t) => `${t.window_s} s`, num: true },
    ], ev.thresholds));
  parts.push(kv([
    ["rule", a.rule],
    ["targets", (a.targets || []).join(", ") || "–"],
    ["ports", (a.target_ports || []).slice(0, 40).join(", ") + ((a.target_ports || []).length > 40 ? " …" : "") || "–"],
    ev.forest_score !== null && ev.forest_score !== undefined && ["forest score", ev.forest_score.toFixed(3)],
    ev.realness && ["seen as", ev.realness],
    ev.notes && ev.notes.length && ["notes", ev.notes.join("; ")],
    a.recommended && a.recommended.length && ["recommended", a.recommended.join("; ")],
  ]));
  if (ev.features)
    parts.push(el("details", {}, el("summary", {}, "features"),
      kv(Object.entries(ev.features).map(([k, v]) => [k.replace(/_/g, " "), typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : String(v)]))));
  return parts;
}

function actionText(act) {
  if (!act) return "–";
  return act.kind + (act.ttl_s ? ` ${dur(act.ttl_s)}` : "");
}

views.alerts = (root, params) => {
  const form = el("form", { class: "filters", role: "search" });
  const type = el("select", { name: "type" });
  const severity = el("select", { name: "severity" }, ["", "low", "medium", "high", "critical"].map((v) => el("option", { value: v }, v ? `${v} or more` : "any")));
  const source = el("input", { name: "source", placeholder: "198.18.0.1", size: 18, "data-filter": true });
  const since = el("select", { name: "since" }, [["15m", "15 minutes"], ["1h", "hour"], ["24h", "day"], ["7d", "week"], ["30d", "30 days"]].map(([v, l]) => el("option", { value: v }, `last ${l}`)));
  form.append(
    el("label", {}, "time", since),
    el("label", {}, "type", type),
    el("label", {}, "severity", severity),
    el("label", {}, "source", source),
    el("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const out = el("div");
  root.append(el("h1", {}, "Alerts"), form, out);
  let incidents = new Set();
  async function loadTypes() {
    const doc = await api("/api/v1/openapi.json");
    const p = (doc.paths["/api/v1/alerts"].get.parameters || []).find((x) => x.name === "type");
    const list = (p && p.schema && p.schema.enum) || [];
    fill(type, el("option", { value: "" }, "any"), list.map((t) => el("option", { value: t }, t.replace(/_/g, " "))));
    type.value = params.get("type") || "";
  }
  severity.value = params.get("severity") || "";
  since.value = params.get("since") || "24h";
  source.value = params.get("source") || "";
  async function load() {
    const q = new URLSearchParams({ limit: "200", since: since.value });
    if (type.value) q.set("type", type.value);
    if (severity.value) q.set("severity", severity.value);
    if (source.value.trim()) q.set("source", source.value.trim());
    const [rows, inc] = await Promise.all([api("/api/v1/alerts?" + q), api("/api/v1/incidents?limit=1000")]);
    incidents = new Set(inc.map((i) => i.id));
    const t = table([
      { label: "time", value: (a) => when(a.timestamp_ms) },
      { label: "type", value: (a) => a.attack_type.replace(/_/g, " ") },
      { label: "severity", value: (a) => el("span", { class: "sev-" + a.severity }, a.severity) },
      { label: "confidence", value: (a) => a.confidence.toFixed(2), num: true },
      { label: "source", value: (a) => a.source, mono: true },
      { label: "action", value: (a) => actionText(a.action) },
      { label: "incident", value: (a) => (incidents.has(a.id) ? el("a", { href: `#/incidents/${encodeURIComponent(a.id)}` }, "report") : "–") },
    ], rows, {
      empty: "no alert matches",
      rowAttrs: (a) => ({ class: "clickable", tabindex: 0, "data-id": a.id, "aria-expanded": "false" }),
    });
    t.addEventListener("click", (e) => toggleRow(e, rows));
    t.addEventListener("keydown", (e) => {
      if (e.key === "Enter") toggleRow(e, rows);
    });
    fill(out, el("p", { class: "muted" }, `${rows.length} alert${rows.length === 1 ? "" : "s"}${rows.length === 200 ? " (the newest 200)" : ""}`), t);
  }
  function toggleRow(e, rows) {
    if (e.target.closest("a")) return;
    const tr = e.target.closest("tr[data-id]");
    if (!tr) return;
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      tr.classList.remove("open");
      tr.setAttribute("aria-expanded", "false");
      return;
    }
    const a = rows.find((r) => r.id === tr.dataset.id);
    tr.classList.add("open");
    tr.setAttribute("aria-expanded", "true");
    tr.after(el("tr", { class: "detail" }, el("td", { colspan: 7 }, evidence(a))));
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ since: since.value });
    if (type.value) q.set("type", type.value);
    if (severity.value) q.set("severity", severity.value);
    if (source.value.trim()) q.set("source", source.value.trim());
    history.replaceState(null, "", "#/alerts" + (q.toString() ? "?" + q : ""));
    load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  });
  loadTypes().then(load).catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  const off = onLive((ev) => {
    if (ev === "alert") load().catch(() => {});
  });
  return off;
};

views.incidents = (root, params, id) => {
  if (id) return incident(root, id);
  const out = el("div");
  root.append(el("h1", {}, "Incidents"), out);
  async function load() {
    const rows = await api("/api/v1/incidents?limit=500");
    fill(out, table([
      { label: "time", value: (i) => when(i.timestamp_ms) },
      { label: "source", value: (i) => i.source, mono: true },
      { label: "summary", value: (i) => el("a", { href: `#/incidents/${encodeURIComponent(i.id)}` }, i.summary) },
    ], rows, { empty: "no incident yet: one is written for every alert Astra acted on" }));
  }
  load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  return onLive((ev) => {
    if (ev === "alert") load().catch(() => {});
  });
};

function incident(root, id) {
  const out = el("div");
  root.append(el("p", {}, el("a", { href: "#/incidents" }, "← incidents")), out);
  api(`/api/v1/incidents/${encodeURIComponent(id)}`).then((inc) => {
    const r = inc.report || {};
    const a = r.alert || {};
    const iocs = r.iocs || {};
    fill(out, 
      el("h1", { "data-testid": "incident-title" }, `Incident ${inc.id}`),
      el("div", { class: "grid" },
        card("Summary", el("p", { "data-testid": "incident-summary" }, r.summary || inc.summary), kv([
          ["created", r.created || when(inc.timestamp_ms)],
          ["source", inc.source],
          ["type", (a.attack_type || "").replace(/_/g, " ")],
          ["severity", a.severity],
          ["confidence", a.confidence !== undefined ? a.confidence.toFixed(2) : "–"],
        ])),
        card("Actions taken", el("ul", {}, (r.actions_taken || []).map((x) => el("li", {}, x))),
          el("h2", {}, "Recommended"), el("ul", {}, (r.recommended || []).map((x) => el("li", {}, x)))),
        card("Indicators", kv(Object.entries(iocs).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]))),
      ),
      el("div", { class: "card", style: "margin-top:1rem" }, el("h2", {}, "Evidence"), evidence(a)),
      el("div", { class: "card", style: "margin-top:1rem" }, el("h2", {}, `Flows (${(r.flows || []).length})`), flowTable(r.flows || [])),
    );
  }).catch((err) => fill(out, el("p", { class: "error" }, err.status === 404 ? "No such incident: alerts Astra did not act on have none." : err.message)));
  return () => {};
}

function flowTable(rows) {
  const proto = (f) => f.proto_name || ({ 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6" }[f.proto] || String(f.proto));
  return table([
    { label: "from", value: (f) => endpoint(f.src, f.src_port), mono: true },
    { label: "to", value: (f) => endpoint(f.dst, f.dst_port), mono: true },
    { label: "proto", value: proto },
    { label: "iface", value: (f) => f.iface || (f.ifindex ? `#${f.ifindex}` : "–") },
    { label: "packets →", value: (f) => si(f.fwd.packets), num: true },
    { label: "bytes →", value: (f) => bytes(f.fwd.bytes), num: true },
    { label: "packets ←", value: (f) => si(f.rev.packets), num: true },
    { label: "bytes ←", value: (f) => bytes(f.rev.bytes), num: true },
    // Reports keep the kernel's clock only; live flows have wall-clock times.
    rows.some((f) => f.last_seen) && { label: "last seen", value: (f) => (f.last_seen ? f.last_seen.replace("T", " ").replace("Z", "") : "–") },
  ].filter(Boolean), rows, { empty: "no flow" });
}

views.lists = (root, params) => {
  let kind = LISTS.includes(params.get("kind")) ? params.get("kind") : "block";
  let offset = Number(params.get("offset")) || 0;
  // null: every entry; "": the untagged ones; else one feed's.
  let tag = params.has("tag") ? params.get("tag") : null;
  let tags = [];
  const tabs = el("div", { class: "tabs", role: "tablist" });
  const tagSel = el("select", { "aria-label": "tag", "data-filter": true });
  const add = el("form", { class: "filters needs-admin", "data-testid": "add-form" });
  const net = el("input", { name: "net", placeholder: "198.18.0.1 or 198.18.0.0/24", size: 24, required: true });
  const ttl = el("input", { name: "ttl", placeholder: "10m (empty: permanent)", size: 16 });
  const reason = el("input", { name: "reason", placeholder: "why", size: 20 });
  const rate = el("input", { name: "rate", placeholder: "100pps or 10mbit", size: 14 });
  const rateLabel = el("label", {}, "rate", rate);
  add.append(el("label", {}, "address or prefix", net), el("label", {}, "ttl", ttl), el("label", {}, "reason", reason), rateLabel, el("button", { type: "submit", class: "primary" }, "Add"));
  const out = el("div");
  root.append(el("h1", {}, "Lists"), tabs, el("div", { class: "filters" }, el("label", {}, "tag", tagSel)), add, out);
  let rows = [];

  function go() {
    const q = new URLSearchParams({ kind });
    if (offset) q.set("offset", offset);
    if (tag !== null) q.set("tag", tag);
    history.replaceState(null, "", "#/lists?" + q);
    load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  }
  function drawTabs() {
    fill(tabs, LISTS.map((k) => {
      const b = el("button", { type: "button", role: "tab", "aria-selected": String(k === kind) }, k);
      b.addEventListener("click", () => {
        kind = k;
        offset = 0;
        tag = null;
        drawTabs();
        go();
      });
      return b;
    }));
    rateLabel.hidden = kind !== "throttle";
    add.hidden = kind === "protect";
  }
  async function load() {
    const q = new URLSearchParams({ limit: PAGE, offset });
    if (tag !== null) q.set("tag", tag);
    const [page, counts] = await Promise.all([api(`/api/v1/${LIST_PATH[kind]}?${q}`), api(`/api/v1/tags?list=${kind}`)]);
    tags = counts;
    fill(tagSel, el("option", { value: "-1" }, "all"), tags.map((t, i) => el("option", { value: i }, `${t.tag || "(untagged)"} (${t.entries})`)));
    tagSel.value = String(tags.findIndex((t) => t.tag === tag));
    rows = page.entries;
    const loadedAt = performance.now();
    const remaining = (r) => (r.ttl_remaining_s === null || r.ttl_remaining_s === undefined ? null : r.ttl_remaining_s - (performance.now() - loadedAt) / 1000);
    const cols = [
      { label: "address", value: (r) => r.net, mono: true },
      { label: "expires in", value: (r) => el("span", { "data-ttl": r.ttl_remaining_s ?? "" }, dur(remaining(r))), num: true },
      { label: "hits", value: (r) => (r.hits === undefined ? "–" : si(r.hits)), num: true },
      { label: "in kernel", value: (r) => (r.in_kernel ? "yes" : el("span", { class: "error" }, "no")) },
      { label: "source", value: (r) => r.source },
      { label: "tag", value: (r) => r.tag || "–" },
      { label: "reason", value: (r) => r.reason },
    ];
    if (kind === "throttle") cols.splice(2, 0, { label: "rate", value: (r) => rateText(r.rate) });
    if (kind === "protect") cols.splice(2, 0, { label: "terms", value: (r) => JSON.stringify(r.protect || r.rate || {}) });
    cols.push({
      label: "",
      value: (r) => el("button", { type: "button", class: "danger needs-admin", "data-remove": r.net, "aria-label": `remove ${r.net}` }, "remove"),
    });
    const t = table(cols, rows, { empty: tag !== null ? "no entry with this tag" : "the list is empty" });
    const total = page.total;
    const pager = el("div", { class: "pager" },
      el("button", { type: "button", disabled: offset === 0, "data-page": "prev" }, "← newer"),
      el("span", { class: "muted", "data-testid": "list-range" }, total ? `${offset + 1}–${offset + rows.length} of ${total}` : "0 entries"),
      el("button", { type: "button", disabled: page.next_offset === null || page.next_offset === undefined, "data-page": "next" }, "older →"));
    pager.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-page]");
      if (!b) return;
      offset = b.dataset.page === "next" ? page.next_offset : Math.max(0, offset - PAGE);
      go();
    });
    t.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-remove]");
      if (b) remove(b.dataset.remove);
    });
    fill(out, t, pager);
  }
  function rateText(r) {
    if (!r) return "–";
    const parts = [];
    if (r.pps) parts.push(`${si(r.pps)} pps`);
    if (r.bps) parts.push(`${si(r.bps, "bit/s")}`);
    return parts.join(", ") || JSON.stringify(r);
  }
  async function remove(n) {
    if (!confirm(`Remove ${n} from the ${kind} list?`)) return;
    try {
      // Protections are keyed by the host, the others by the prefix.
      const key = kind === "protect" ? n.replace(/\/(32|128)$/, "") : n;
      await api(`/api/v1/${LIST_PATH[kind]}/${key}`, { method: "DELETE" });
      toast(`${n} removed from the ${kind} list`);
      await load();
    } catch (err) {
      toast(err.message, true);
    }
  }
  add.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { net: net.value.trim(), reason: reason.value.trim() || "from the web UI" };
    if (ttl.value.trim()) body.ttl = ttl.value.trim();
    if (kind === "throttle") body.rate = rate.value.trim();
    try {
      const r = await api(`/api/v1/${LIST_PATH[kind]}`, { method: "POST", body });
      toast(`${(r && r.entry && r.entry.net) || body.net} added to the ${kind} list`);
      net.value = "";
      await load();
    } catch (err) {
      toast(err.message, true);
    }
  });
  tagSel.addEventListener("change", () => {
    const i = Number(tagSel.value);
    tag = i >= 0 && tags[i] ? tags[i].tag : null;
    offset = 0;
    go();
  });
  drawTabs();
  load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  // Countdowns tick in the page; the list itself is re-read when it changes.
  const tick = setInterval(() => {
    for (const span of out.querySelectorAll("span[data-ttl]")) {
      if (span.dataset.ttl === "") continue;
      const left = Number(span.dataset.ttl) - 1;
      span.dataset.ttl = left;
      span.textContent = dur(left);
    }
  }, 1000);
  const off = onLive((ev, d) => {
    if (ev === "lists" && (!d.changed || d.changed.includes(LIST_PATH[kind]))) load().catch(() => {});
  });
  return () => {
    clearInterval(tick);
    off();
  };
};

views.flows = (root, params) => {
  const form = el("form", { class: "filters", role: "search" });
  const addr = el("input", { name: "addr", placeholder: "address or prefix", size: 22, "data-filter": true });
  const port = el("input", { name: "port", placeholder: "port", size: 6, inputmode: "numeric" });
  const top = el("select", { name: "top" }, [25, 100, 500, 1000].map((n) => el("option", { value: n }, n)));
  const auto = el("input", { type: "checkbox", name: "auto", checked: true });
  form.append(el("label", {}, "address", addr), el("label", {}, "port", port), el("label", {}, "largest", top),
    el("label", {}, "refresh", auto), el("button", { type: "submit", class: "primary" }, "Search"));
  addr.value = params.get("addr") || "";
  port.value = params.get("port") || "";
  top.value = params.get("top") || "100";
  const out = el("div");
  root.append(el("h1", {}, "Flows"), form, out);
  // Reading a million-flow table costs the agent a second: refresh no more often than ten
  // times what the last read took.
  let every = 5000;
  async function load() {
    const q = new URLSearchParams({ top: top.value });
    if (addr.value.trim()) q.set("addr", addr.value.trim());
    if (port.value.trim()) q.set("port", port.value.trim());
    const t0 = performance.now();
    const rows = await api("/api/v1/flows?" + q);
    every = Math.max(5000, 10 * (performance.now() - t0));
    fill(out, el("p", { class: "muted" }, `${rows.length} flow${rows.length === 1 ? "" : "s"}, largest first`), flowTable(rows));
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ top: top.value });
    if (addr.value.trim()) q.set("addr", addr.value.trim());
    if (port.value.trim()) q.set("port", port.value.trim());
    history.replaceState(null, "", "#/flows?" + q);
    load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  });
  load().catch((err) => fill(out, el("p", { class: "error" }, err.message)));
  let timer = null;
  let gone = false;
  const again = () => {
    timer = setTimeout(async () => {
      if (auto.checked && document.visibilityState === "visible") await load().catch(() => {});
      if (!gone) again();
    }, every);
  };
  again();
  return () => {
    gone = true;
    clearTimeout(timer);
  };
};

views.model = (root) => {
  const info = el("div");
  const hist = chart("Anomaly scores of the last pass");
  const train = el("button", { type: "button", class: "primary needs-admin", "data-testid": "train" }, "Train now");
  root.append(el("h1", {}, "Model"), el("div", { class: "grid" }, card("Isolation forest", info, el("p", {}, train)), hist.box));
  async function load() {
    const { model: m } = await api("/api/v1/model");
    if (!m) {
      fill(info, el("p", { class: "muted" }, "The model is off in this agent's settings."));
      train.disabled = true;
      return;
    }
    fill(info, kv([
      ["state", m.state],
      ["origin", m.origin || "–"],
      ["trained", m.trained_at ? when(m.trained_at * 1000) : "not yet"],
      ["trained on", m.trained_rows ? `${m.trained_rows} rows` : "–"],
      ["rows collected", m.rows_collected],
      m.learning_remaining_s !== null && m.learning_remaining_s !== undefined && ["learning for", dur(m.learning_remaining_s)],
      m.next_retrain_s !== null && m.next_retrain_s !== undefined && ["next retrain", `in ${dur(m.next_retrain_s)}`],
      ["alert threshold", m.threshold],
    ]));
    const bins = m.score_histogram || [];
    drawBars(hist, bins.map((n, i) => ({ label: (i / bins.length).toFixed(2), value: n, color: i / bins.length >= m.threshold ? 1 : 0 })),
      { marker: m.threshold });
    fill(hist.legend, el("span", { style: "--swatch: var(--c0)" }, "below the threshold"), el("span", { style: "--swatch: var(--c1)" }, "anomalous"));
  }
  train.addEventListener("click", async () => {
    try {
      await api("/api/v1/model/train", { method: "POST" });
      toast("Training at the next poll");
      setTimeout(() => load().catch(() => {}), 2500);
    } catch (err) {
      toast(err.message, true);
    }
  });
  load().catch((err) => fill(info, el("p", { class: "error" }, err.message)));
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
};

// ---------------------------------------------------------------------------------------------
// Routing and start

let cleanup = () => {};

function route() {
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = hash.split("?");
  const [name, ...rest] = path.split("/");
  const view = views[name] ? name : "overview";
  cleanup();
  const root = document.getElementById("view");
  fill(root);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `Astra: ${view}`;
  cleanup = views[view](root, new URLSearchParams(query || ""), rest.length ? decodeURIComponent(rest.join("/")) : null) || (() => {});
  if (window.astra.firstPaint === null) requestAnimationFrame(() => (window.astra.firstPaint = performance.now()));
}

function theme(next) {
  const root = document.documentElement;
  if (next) localStorage.setItem("astra.theme", next);
  const t = localStorage.getItem("astra.theme");
  if (t) root.dataset.theme = t;
}

function keys(e) {
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const nav = document.querySelector(`#nav a[data-key="${e.key}"]`);
  if (nav) {
    location.hash = nav.getAttribute("href");
  } else if (e.key === "/") {
    const f = document.querySelector("#view [data-filter]");
    if (f) {
      e.preventDefault();
      f.focus();
    }
  } else if (e.key === "r") {
    route();
  } else if (e.key === "t") {
    document.getElementById("theme").click();
  } else if (e.key === "?") {
    document.getElementById("help").showModal();
  }
}

window.addEventListener("error", (e) => window.astra.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.astra.errors.push(String(e.reason)));

document.addEventListener("DOMContentLoaded", () => {
  theme();
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme === "dark" ||
      (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    theme(dark ? "light" : "dark");
  });
  const input = document.getElementById("token");
  input.value = auth.token;
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    auth.token = input.value.trim();
    whoami().then(() => {
      if (auth.role === "wrong token") toast("That token is wrong or was rotated", true);
      else toast(`Signed in as ${auth.role}`);
      restartStream();
      route();
    }).catch((err) => toast(err.message, true));
  });
  document.addEventListener("keydown", keys);
  window.addEventListener("hashchange", route);
  whoami().catch((err) => toast(err.message, true)).finally(() => {
    route();
    runStream();
  });
});
