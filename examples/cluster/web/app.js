// The Chassis demo dashboard: renders the launcher's state document, which arrives as a
// server-sent event ("state") every second and on every chaos event. No framework, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const pct = (x, d = 2) => fmt(100 * x, d) + "%";

let last = null;

function render(s) {
  last = s;
  document.body.dataset.phase = s.phase;
  renderTotals(s);
  renderChart(s);
  renderTopology(s);
  renderRegistry(s.registry, s.services);
  renderProtection(s.instances);
  renderActions(s);
  renderEvents(s.events || []);
}

function renderTotals(s) {
  const t = s.load.totals || {};
  const dur = s.duration_s > 0 ? ` / ${fmt(s.duration_s, 0)}s` : "";
  const cards = [
    ["phase", s.phase],
    ["elapsed", fmt(s.elapsed_s, 0) + "s" + dur],
    ["requests", t.requests ?? 0],
    ["success", pct(t.success_rate ?? 1)],
    ["idempotent success", pct(t.idempotent_success_rate ?? 1, 3)],
    ["p50 / p99", `${fmt(t.p50_ms)} / ${fmt(t.p99_ms)} ms`],
    ["p99.9", fmt(t.p999_ms) + " ms"],
    ["rate", fmt(s.load.rate, 0) + " req/s"],
    ["retried", t.retried ?? 0],
    ["degraded", t.degraded ?? 0],
  ];
  $("#totals").innerHTML = cards.map(([k, v]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v">${esc(v)}</div></div>`).join("");
}

// The chart's window: the last chartSpan seconds of the load, on a time axis in seconds since the
// load started (the origin of the chaos events' offsets, which it marks).
const chartSpan = 120;

function renderChart(s) {
  const svg = $("#chart");
  const W = Math.max(300, Math.round(svg.clientWidth || 1200)), H = 180;
  const padL = 40, padR = 8, padT = 16, padB = 20, ph = H - padT - padB;
  const series = (s.load && s.load.series) || [];
  const origin = (s.load_start_ms || 0) / 1000;
  const end = Math.max(chartSpan, Math.ceil(s.elapsed_s || 0)), t0 = end - chartSpan;
  const x = (off) => padL + ((off - t0) / chartSpan) * (W - padL - padR);
  const maxReq = Math.max(10, ...series.map((p) => p.requests));
  const maxP99 = Math.max(10, ...series.map((p) => p.p99_ms));
  const out = [];
  // Requests per second (bars), failures (red), p99 (line).
  const line = [];
  for (const p of series) {
    const off = p.t - origin;
    if (!origin || off < t0 || off >= end) continue;
    const bx = x(off) + 0.5, bw = Math.max(1, x(off + 1) - x(off) - 1);
    const rh = (p.requests / maxReq) * ph;
    out.push(`<rect class="req" x="${bx}" y="${padT + ph - rh}" width="${bw}" height="${rh}"/>`);
    if (p.errors > 0) {
      const eh = Math.max(3, (p.errors / maxReq) * ph);
      out.push(`<rect class="err" x="${bx}" y="${padT + ph - eh}" width="${bw}" height="${eh}"><title>${p.errors} failed</title></rect>`);
    }
    line.push(`${x(off + 0.5).toFixed(1)},${(padT + ph - (p.p99_ms / maxP99) * ph).toFixed(1)}`);
  }
  if (line.length) out.push(`<polyline class="p99" points="${line.join(" ")}"/>`);
  // Chaos events, over the traffic: a band for the ones that last, a line and a label at their start.
  let row = 0; // labels on three rows, so that close events do not overwrite each other
  for (const e of s.events || []) {
    if (!e.chaos || !Number.isFinite(e.offset_s) || e.offset_s < t0 || e.offset_s > end) continue;
    const x0 = x(e.offset_s);
    const w = e.duration_s > 0 ? Math.max(1, x(Math.min(end, e.offset_s + e.duration_s)) - x0) : 0;
    out.push(`<g class="mark" data-kind="${esc(e.kind)}" data-offset="${e.offset_s}">` +
      (w ? `<rect x="${x0}" y="${padT}" width="${w}" height="${ph}"/>` : "") +
      `<line x1="${x0}" x2="${x0}" y1="${padT}" y2="${padT + ph}"/>` +
      `<text x="${x0 + 3}" y="${padT + 10 + 13 * (row++ % 3)}">${esc(e.kind)}</text><title>${esc(e.detail)}</title></g>`);
  }
  // The time axis: a tick every 10 s, in seconds since the load started.
  const ticks = [`<line x1="${padL}" x2="${W - padR}" y1="${padT + ph}" y2="${padT + ph}"/>`];
  for (let t = Math.ceil(t0 / 10) * 10; t <= end; t += 10) {
    ticks.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${padT + ph}" y2="${padT + ph + 4}"/><text class="tick" x="${x(t)}" y="${H - 4}" text-anchor="middle">${t}s</text>`);
  }
  out.push(`<g class="axis x" data-unit="s">${ticks.join("")}</g>`);
  out.push(`<g class="axis y"><text x="${padL - 4}" y="${padT + 4}" text-anchor="end">${maxReq}</text><text x="${padL - 4}" y="${padT + ph}" text-anchor="end">0</text>` +
    `<text x="${padL}" y="${padT - 4}">req/s (max ${maxReq}) · p99 scale ${fmt(maxP99, 0)} ms</text></g>`);
  if (!origin) out.push(`<text class="empty" x="${W / 2}" y="${padT + ph / 2}" text-anchor="middle">no traffic yet: the load starts once every instance is ready</text>`);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.innerHTML = out.join("");
}

function renderTopology(s) {
  const by = {};
  for (const svc of s.services) by[svc] = [];
  for (const i of s.instances || []) (by[i.service] ||= []).push(i);
  if (!(s.instances || []).length) {
    const what = { building: "building the services (go build)…", starting: "starting the registry and the instances…" }[s.phase] || "no instances";
    $("#topology").innerHTML = s.services.map((svc) => `<div class="svc" data-service="${esc(svc)}"><h3>${esc(svc)}</h3><p class="hint">${esc(what)}</p></div>`).join("");
    return;
  }
  $("#topology").innerHTML = s.services.map((svc) => `
    <div class="svc" data-service="${esc(svc)}"><h3>${esc(svc)}</h3>
      ${by[svc].map(instanceCard).join("")}
    </div>`).join("");
}

function instanceCard(i) {
  const live = i.state === "ready" || i.state === "starting";
  // A killed or exited instance serves nothing: no rate, latency, errors or share, whatever its
  // last scrape said.
  const dead = i.live === false || i.state === "killed" || i.state === "exited";
  const m = (v) => (dead ? "–" : v);
  const share = dead ? 0 : i.share || 0;
  const reg = i.registered || "absent";
  const slow = i.service === "pricing" && live ? `<button data-act="slow" data-target="${esc(i.id)}" title="add latency through its /chaos knob">slow</button>` : "";
  const kill = live ? `<button class="danger" data-act="kill" data-target="${esc(i.id)}" title="SIGKILL, then start a replacement">kill</button>` : "";
  return `<div class="inst" data-instance="${esc(i.id)}" data-state="${esc(i.state)}">
    <div class="name">${esc(i.id)} <span class="state">${esc(i.state)}</span></div>
    <div class="addr">${esc(i.addr || "…")} · pid ${esc(i.pid)} · registry <span class="${esc(reg)}">${esc(reg)}</span></div>
    <div class="m">
      <div><span>req/s</span>${m(fmt(i.rps))}</div>
      <div><span>p99 ms</span>${m(fmt(i.p99_ms))}</div>
      <div><span>errors</span>${m(pct(i.error_rate || 0, 1))}</div>
      <div class="share"><span>share</span>${m(pct(share, 0))}</div>
    </div>
    <div class="bar" title="share of its service's responses"><i style="width:${Math.round(100 * share)}%"></i></div>
    <div class="btns">${kill} ${slow} <span class="hint">${!dead && i.rss_mb ? fmt(i.rss_mb) + " MB" : ""}</span></div>
  </div>`;
}

function renderRegistry(r, services) {
  $("#regkind").textContent = `${r.kind || ""} at ${r.addr || ""}`;
  const head = r.reachable ? "" : `<p class="unreachable">unreachable: ${esc(r.error || "")} — services keep their last known lists</p>`;
  const rows = [];
  for (const svc of services) {
    for (const it of (r.services || {})[svc] || []) {
      rows.push(`<tr><td>${esc(svc)}</td><td>${esc(it.instance || it.service_id)}</td><td>${esc(it.address)}</td><td class="${esc(it.status)}">${esc(it.status)}</td></tr>`);
    }
  }
  $("#registry").innerHTML = head + `<table><tr><th>service</th><th>instance</th><th>address</th><th>check</th></tr>${rows.join("")}</table>`;
}

function renderProtection(instances) {
  const rows = [];
  for (const i of instances || []) {
    for (const [peer, v] of Object.entries(i.peers || {})) {
      if (!peer) continue;
      rows.push(`<tr><td>${esc(i.id)} → ${esc(peer)}</td><td>${fmt(v.instances, 0)}</td><td>${fmt(v.age_s)}s</td><td>${fmt(v.ejected, 0)} / ${fmt(v.ejections, 0)}</td><td>${fmt(v.retries, 0)}</td><td>${fmt(v.rejections, 0)}</td></tr>`);
    }
    for (const b of i.breakers || []) {
      rows.push(`<tr><td>${esc(i.id)} → ${esc(b.peer)}</td><td colspan="5" class="critical">breaker ${esc(b.state)} for ${esc(b.instance)}</td></tr>`);
    }
  }
  $("#protection").innerHTML = rows.length
    ? `<table><tr><th>caller → dependency</th><th>instances seen</th><th>list age</th><th>ejected now / total</th><th>retries</th><th>rejections</th></tr>${rows.join("")}</table>`
    : `<p class="hint">no client metrics yet</p>`;
}

function renderActions(s) {
  const busy = s.phase !== "running";
  const btn = (act, target, label) => `<button ${busy ? "disabled" : ""} data-act="${act}" data-target="${esc(target)}">${esc(label)}</button>`;
  $("#actions").innerHTML = s.services.map((svc) => btn("rolling", svc, `rolling restart ${svc}`)).join("") +
    btn("outage", "registry", "registry outage 5s") + btn("spike", "load", "load spike ×3 for 5s");
}

function renderEvents(events) {
  $("#events").innerHTML = events.slice().reverse().map((e) => `
    <li class="${e.chaos ? "chaos" : ""}" data-kind="${esc(e.kind)}" data-target="${esc(e.target)}" data-setup="${e.setup ? "true" : "false"}">
      <span class="t">${esc(eventTime(e))}</span><span class="kind">${esc(e.kind)}</span>${esc(e.detail)}
      ${e.reaction ? `<span class="reaction ${e.failures > 0 ? "failed" : ""}">↳ ${esc(e.reaction)}</span>` : ""}
    </li>`).join("");
}

// eventTime is an event's time in seconds since the load started; the setup's events say so (their
// offsets are negative, or not known yet while the cluster starts).
function eventTime(e) {
  if (e.setup) return "setup";
  const t = Number(e.offset_s);
  return Number.isFinite(t) && Math.abs(t) < 1e6 ? t.toFixed(1) + "s" : "–";
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  b.disabled = true;
  const res = await fetch("api/chaos", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action: b.dataset.act, target: b.dataset.target }) });
  if (!res.ok) alert(await res.text());
});

function connect() {
  const es = new EventSource("api/events");
  es.addEventListener("state", (m) => {
    $("#status").textContent = "live";
    $("#status").className = "status live";
    render(JSON.parse(m.data));
  });
  es.onerror = () => {
    $("#status").textContent = last && last.phase === "done" ? "demo over" : "connection lost, retrying…";
    $("#status").className = "status lost";
  };
}

window.addEventListener("resize", () => last && renderChart(last));
// The first paint: the state the page was served with, before the event stream connects.
const initial = document.getElementById("initial-state");
if (initial) {
  try {
    render(JSON.parse(initial.textContent));
  } catch (err) {
    $("#status").textContent = "could not read the initial state: " + err;
  }
}
connect();
