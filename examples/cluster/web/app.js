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
  renderChart(s.load.series || []);
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

function renderChart(series) {
  const c = $("#chart");
  const w = (c.width = c.clientWidth * devicePixelRatio || 1200);
  const h = (c.height = 160 * devicePixelRatio);
  const g = c.getContext("2d");
  g.clearRect(0, 0, w, h);
  if (!series.length) return;
  const n = 120, bw = w / n;
  const maxReq = Math.max(10, ...series.map((p) => p.requests));
  const maxP99 = Math.max(10, ...series.map((p) => p.p99_ms));
  const off = n - series.length;
  series.forEach((p, i) => {
    const x = (off + i) * bw;
    const rh = (p.requests / maxReq) * (h - 20);
    g.fillStyle = "#2f4a6b";
    g.fillRect(x + 1, h - rh, bw - 2, rh);
    if (p.errors > 0) {
      const eh = Math.max(3, (p.errors / maxReq) * (h - 20));
      g.fillStyle = "#f85149";
      g.fillRect(x + 1, h - eh, bw - 2, eh);
    }
  });
  g.strokeStyle = "#d29922";
  g.lineWidth = 2 * devicePixelRatio;
  g.beginPath();
  series.forEach((p, i) => {
    const x = (off + i + 0.5) * bw, y = h - (p.p99_ms / maxP99) * (h - 20);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#8a99a8";
  g.font = `${11 * devicePixelRatio}px system-ui`;
  g.fillText(`max ${maxReq} req/s · p99 scale ${fmt(maxP99, 0)} ms`, 6, 14 * devicePixelRatio);
}

function renderTopology(s) {
  const by = {};
  for (const svc of s.services) by[svc] = [];
  for (const i of s.instances || []) (by[i.service] ||= []).push(i);
  $("#topology").innerHTML = s.services.map((svc) => `
    <div class="svc" data-service="${esc(svc)}"><h3>${esc(svc)}</h3>
      ${by[svc].map(instanceCard).join("")}
    </div>`).join("");
}

function instanceCard(i) {
  const live = i.state === "ready" || i.state === "starting";
  const reg = i.registered || "absent";
  const slow = i.service === "pricing" && live ? `<button data-act="slow" data-target="${esc(i.id)}" title="add latency through its /chaos knob">slow</button>` : "";
  const kill = live ? `<button class="danger" data-act="kill" data-target="${esc(i.id)}" title="SIGKILL, then start a replacement">kill</button>` : "";
  return `<div class="inst" data-instance="${esc(i.id)}" data-state="${esc(i.state)}">
    <div class="name">${esc(i.id)} <span class="state">${esc(i.state)}</span></div>
    <div class="addr">${esc(i.addr || "…")} · pid ${esc(i.pid)} · registry <span class="${esc(reg)}">${esc(reg)}</span></div>
    <div class="m">
      <div><span>req/s</span>${fmt(i.rps)}</div>
      <div><span>p99 ms</span>${fmt(i.p99_ms)}</div>
      <div><span>errors</span>${pct(i.error_rate || 0, 1)}</div>
      <div><span>share</span>${pct(i.share || 0, 0)}</div>
    </div>
    <div class="bar" title="share of its service's responses"><i style="width:${Math.round(100 * (i.share || 0))}%"></i></div>
    <div class="btns">${kill} ${slow} <span class="hint">${i.rss_mb ? fmt(i.rss_mb) + " MB" : ""}</span></div>
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
    <li class="${e.chaos ? "chaos" : ""}" data-kind="${esc(e.kind)}" data-target="${esc(e.target)}">
      <span class="t">${fmt(e.offset_s)}s</span><span class="kind">${esc(e.kind)}</span>${esc(e.detail)}
      ${e.reaction ? `<span class="reaction ${e.failures > 0 ? "failed" : ""}">↳ ${esc(e.reaction)}</span>` : ""}
    </li>`).join("");
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

window.addEventListener("resize", () => last && renderChart(last.load.series || []));
connect();
