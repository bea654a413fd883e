-- pgpool.dashboard: the dashboard page. html(opts) returns one
-- self-contained HTML document (inline CSS and JavaScript, the chart drawn
-- in inline SVG, no font, script or image fetched) that polls a data URL
-- and draws every pool of every process from it: live gauges, the last 15
-- minutes of history, health with its reasons, incident counters, closes
-- by reason, any table of counts a pool's figures carry (connect errors by
-- SQLSTATE class), and its hogs when the figures list them.
--
-- The data URL may answer with
--   - what pgpool.nginx's data() serves: { workers = { snapshot, ... }, totals, status }
--   - one pgpool.snapshot{ history = true } (a plain Lua process)
--   - a list of snapshots.
--
-- For the specs, the page leaves its figures in the DOM: every pool card
-- has data-pid and data-pool, every figure data-field and data-value, the
-- chart data-samples (samples drawn) and data-peak-in-use; <body> counts
-- its renders in data-renders.

local type, tostring, tonumber, error = type, tostring, tonumber, error
local format = string.format

local M = {}

local CSS = [==[
:root{--bg:#0b1120;--card:#121a2e;--card2:#17213a;--line:#24304d;--text:#e5e9f2;--muted:#8b97b1;
--ok:#22c55e;--warning:#f5a524;--critical:#ef4444;--inuse:#4f8ff7;--idle:#2dd4bf;--conn:#a78bfa;
--wait:#f43f5e;--max:#cbd5e1}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header.top{display:flex;align-items:center;gap:14px;padding:14px 24px;border-bottom:1px solid var(--line);background:#0e1528}
header.top h1{font-size:19px;margin:0;font-weight:650;letter-spacing:.2px}
header.top .meta{color:var(--muted);margin-left:auto;font-size:13px}
.pill{padding:3px 11px;border-radius:999px;font-weight:650;font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.s-ok .pill,.pill.s-ok{background:rgba(34,197,94,.15);color:var(--ok)}
.s-warning .pill,.pill.s-warning{background:rgba(245,165,36,.15);color:var(--warning)}
.s-critical .pill,.pill.s-critical{background:rgba(239,68,68,.18);color:var(--critical)}
.pill.s-stale{background:#334155;color:#cbd5e1}
.live{width:9px;height:9px;border-radius:50%;background:var(--ok);box-shadow:0 0 0 3px rgba(34,197,94,.2)}
.live.off{background:#64748b;box-shadow:none}
main{padding:18px 24px 28px}
.banner{background:rgba(239,68,68,.12);border:1px solid rgba(239,68,68,.4);color:#fecaca;padding:8px 12px;border-radius:8px;margin-bottom:14px}
h2.section{font-size:12px;text-transform:uppercase;letter-spacing:1px;color:var(--muted);margin:0 0 8px;font-weight:600}
table.totals{width:100%;border-collapse:collapse;background:var(--card);border-radius:10px;overflow:hidden;margin-bottom:20px}
table.totals th{font-size:11px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted);font-weight:600;text-align:right;padding:8px 12px;background:var(--card2)}
table.totals td{text-align:right;padding:8px 12px;border-top:1px solid var(--line);font-variant-numeric:tabular-nums}
table.totals th:first-child,table.totals td:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
article.pool{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px;border-top:3px solid var(--ok)}
article.pool.s-warning{border-top-color:var(--warning)}
article.pool.s-critical{border-top-color:var(--critical)}
article.pool header{display:flex;align-items:center;gap:10px}
article.pool h3{margin:0;font-size:16px;font-weight:650}
.pid{color:var(--muted);font-size:12px;font-family:ui-monospace,monospace;background:var(--card2);padding:2px 7px;border-radius:6px}
article.pool header .pill{margin-left:auto}
.reasons{margin:8px 0 0;padding:0;list-style:none;font-size:12.5px}
.reasons li{padding:2px 0 2px 14px;position:relative;color:#fde2b2}
.s-critical .reasons li{color:#fecaca}
.reasons li:before{content:"";position:absolute;left:2px;top:8px;width:6px;height:6px;border-radius:50%;background:currentColor}
.bar{position:relative;height:12px;border-radius:6px;background:#1e2942;margin:12px 0 4px;overflow:hidden;display:flex}
.bar span{height:100%}
.bar .limit{position:absolute;top:0;bottom:0;width:2px;background:var(--warning)}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(72px,1fr));gap:6px;margin:10px 0}
.fig{background:var(--card2);border-radius:8px;padding:6px 7px;overflow:hidden}
.fig .v{display:block;font-size:20px;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap}
.fig .of{color:var(--muted);font-weight:400;margin:0 3px}
.fig small{color:var(--muted);font-size:10.5px;text-transform:uppercase;letter-spacing:.2px;white-space:nowrap}
.fig.key .v:before{content:"";display:inline-block;width:8px;height:8px;border-radius:2px;margin-right:6px;vertical-align:middle;background:var(--c)}
svg.chart{width:100%;height:auto;display:block;background:#0f1729;border-radius:8px}
svg.chart text{fill:var(--muted);font-size:10px}
.legend{display:flex;gap:14px;font-size:11.5px;color:var(--muted);margin:6px 0 2px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin-top:10px}
.chip{background:var(--card2);border-radius:6px;padding:3px 8px;font-size:12px;color:var(--muted)}
.chip b{color:var(--text);font-weight:600;margin-left:4px;font-variant-numeric:tabular-nums}
.chip.bad{background:rgba(239,68,68,.14);color:#fca5a5}
.chip.bad b{color:#fecaca}
.sub{margin-top:10px}
.sub h4{margin:0 0 4px;font-size:11px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted);font-weight:600}
table.small{width:100%;border-collapse:collapse;font-size:12px}
table.small td,table.small th{padding:3px 6px;border-top:1px solid var(--line);text-align:right;font-variant-numeric:tabular-nums}
table.small th{color:var(--muted);font-weight:600;border-top:0}
table.small td:first-child,table.small th:first-child{text-align:left;font-family:ui-monospace,monospace}
.empty{color:var(--muted);padding:40px;text-align:center}
]==]

local SCRIPT = [==[
"use strict";
const body = document.body;
const DATA_URL = body.dataset.url;
const REFRESH_MS = Math.max(250, Number(body.dataset.refresh) * 1000);
const WINDOW_S = 900, MIN_SPAN_S = 30;
const INCIDENTS = ["timeouts", "connect_errors", "leaked", "slow_queries", "full_rejects",
  "shutdown_rejects", "query_errors", "retries"];
const CLOSES = ["closed_idle", "closed_lifetime", "closed_broken", "closed_discarded", "closed_lent"];
const TOTALS = ["workers", "in_use", "idle", "connecting", "waiting", "total", "max", "queries",
  "timeouts", "connect_errors", "leaked", "slow_queries"];
const NOT_TABLES = { health: 1, history: 1, hogs: 1, histograms: 1, window: 1, health_options: 1 };
let renders = 0, last = null, rates = {};

const esc = s => String(s).replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";");
const list = x => Array.isArray(x) ? x : (x && typeof x === "object" ? Object.values(x) : []);
const num = x => typeof x === "number" && isFinite(x) ? x : 0;
const words = s => String(s).replace(/_/g, " ");
function fmt(v) {
  if (typeof v !== "number") return "–";
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  return v < 10 ? v.toFixed(3) : v.toFixed(1);
}
const fig = (field, v) => `<b data-field="${esc(field)}" data-value="${esc(v)}">${fmt(v)}</b>`;

// The three shapes the data URL may answer with, as { workers, totals, status }.
function normalize(d) {
  if (Array.isArray(d)) return { workers: d };
  if (d && d.workers) return { workers: list(d.workers), totals: list(d.totals), status: d.status };
  if (d && d.pools) return { workers: [d] };
  return { workers: [] };
}

function worst(statuses) {
  const rank = { ok: 0, warning: 1, critical: 2 };
  return statuses.reduce((a, b) => (rank[b] || 0) > (rank[a] || 0) ? b : a, "ok");
}

// The chart ---------------------------------------------------------------
const W = 560, H = 160, PL = 30, PR = 14, PT = 10, PB = 20;

function niceStep(span) {
  for (const s of [10, 15, 30, 60, 120, 180, 300]) if (span / s <= 6) return s;
  return 300;
}

function chart(st, now) {
  const samples = list(st.history).filter(s => typeof s.time === "number");
  const end = Math.max(now, samples.length ? samples[samples.length - 1].time : now);
  let start = Math.max(end - WINDOW_S, samples.length ? samples[0].time : end);
  if (end - start < MIN_SPAN_S) start = end - MIN_SPAN_S;
  const shown = samples.filter(s => s.time >= start);
  let top = Math.max(num(st.max), num(st.limit), 1);
  let peak = 0;
  for (const s of shown) {
    top = Math.max(top, num(s.total) + num(s.waiting), num(s.waiting));
    peak = Math.max(peak, num(s.in_use));
  }
  top = Math.ceil(top * 1.12);
  const pw = W - PL - PR, ph = H - PT - PB;
  const x = t => (PL + (t - start) / (end - start) * pw).toFixed(1);
  const y = v => (PT + ph - v / top * ph).toFixed(1);
  // runs of samples without a gap of more than 5 s
  const runs = [];
  for (const s of shown) {
    const run = runs[runs.length - 1];
    if (run && s.time - run[run.length - 1].time <= 5) run.push(s); else runs.push([s]);
  }
  const area = (run, lo, hi) => {
    const up = run.map(s => `${x(s.time)},${y(hi(s))}`);
    const down = run.slice().reverse().map(s => `${x(s.time)},${y(lo(s))}`);
    return "M" + up.join("L") + "L" + down.join("L") + "Z";
  };
  const line = (run, f) => "M" + run.map(s => `${x(s.time)},${y(f(s))}`).join("L");
  const inUse = s => num(s.in_use), busy = s => num(s.in_use) + num(s.connecting);
  const open = s => busy(s) + num(s.idle), waiting = s => num(s.waiting);
  let paths = "";
  for (const run of runs) {
    paths += `<path class="in-use" d="${area(run, () => 0, inUse)}" fill="var(--inuse)" fill-opacity=".55"/>`;
    paths += `<path class="connecting" d="${area(run, inUse, busy)}" fill="var(--conn)" fill-opacity=".5"/>`;
    paths += `<path class="idle" d="${area(run, busy, open)}" fill="var(--idle)" fill-opacity=".28"/>`;
    paths += `<path class="in-use-line" d="${line(run, inUse)}" fill="none" stroke="var(--inuse)" stroke-width="1.5"/>`;
    paths += `<path class="waiting" d="${line(run, waiting)}" fill="none" stroke="var(--wait)" stroke-width="1.8"/>`;
  }
  let grid = "";
  const step = niceStep(end - start);
  for (let t = end; t >= start; t -= step) {
    const ago = end - t;
    const label = ago === 0 ? "now" : ago < 60 ? `-${ago}s` : `-${+(ago / 60).toFixed(1)}m`;
    grid += `<line x1="${x(t)}" x2="${x(t)}" y1="${PT}" y2="${PT + ph}" stroke="#1c2740"/>`;
    grid += `<text x="${x(t)}" y="${H - 6}" text-anchor="${ago === 0 ? "end" : "middle"}">${label}</text>`;
  }
  const marks = [[num(st.max), "max", "var(--max)", "5 4"]];
  if (num(st.limit) < num(st.max)) marks.push([num(st.limit), "limit", "var(--warning)", "2 3"]);
  for (const [v, name, colour, dash] of marks) {
    grid += `<line x1="${PL}" x2="${W - PR}" y1="${y(v)}" y2="${y(v)}" stroke="${colour}" stroke-dasharray="${dash}" stroke-width="1.2"/>`;
    grid += `<text x="${PL - 4}" y="${+y(v) + 3}" text-anchor="end">${v}</text>`;
    grid += `<text x="${W - PR - 2}" y="${+y(v) - 3}" text-anchor="end">${name}</text>`;
  }
  grid += `<text x="${PL - 4}" y="${PT + ph + 3}" text-anchor="end">0</text>`;
  const span = end - start < 120 ? `${end - start} s` : `${Math.round((end - start) / 60)} min`;
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" data-samples="${shown.length}" data-peak-in-use="${peak}"
    role="img" aria-label="connections over the last ${span}">${grid}${paths}</svg>
    <div class="legend"><span><i style="background:var(--inuse)"></i>in use</span>
    <span><i style="background:var(--conn)"></i>connecting</span>
    <span><i style="background:var(--idle)"></i>idle</span>
    <span><i style="background:var(--wait)"></i>waiting</span>
    <span><i style="background:var(--max)"></i>max</span>
    <span style="margin-left:auto">${shown.length} samples, last ${span}</span></div>`;
}

// A pool card -------------------------------------------------------------
function gaugeBar(st) {
  const cap = Math.max(num(st.max), 1);
  const part = (v, colour) => v > 0 ? `<span style="width:${Math.min(100, v / cap * 100)}%;background:${colour}"></span>` : "";
  let limit = "";
  if (num(st.limit) < num(st.max)) limit = `<i class="limit" style="left:${st.limit / cap * 100}%"></i>`;
  return `<div class="bar" title="in use, connecting, idle of max">${part(num(st.in_use), "var(--inuse)")}
    ${part(num(st.connecting), "var(--conn)")}${part(num(st.idle), "var(--idle)")}${limit}</div>`;
}

// The gauges as tiles; a tile of two figures reads "a / b".
function figures(st) {
  const tiles = [[["in_use"], "in use", "var(--inuse)"], [["idle"], "idle", "var(--idle)"],
    [["connecting"], "connecting", "var(--conn)"], [["waiting"], "waiting", "var(--wait)"],
    [["total", "max"], "open / max"], [["limit"], "limit"]];
  if (st.max_shared !== undefined) tiles.push([["shared_used", "max_shared"], "shared / cap"]);
  return `<div class="figures">` + tiles.map(([fields, label, colour]) =>
    `<div class="fig${colour ? " key" : ""}"${colour ? ` style="--c:${colour}"` : ""}><span class="v">` +
    fields.map(f => fig(f, st[f])).join(`<span class="of">/</span>`) + `</span><small>${label}</small></div>`
  ).join("") + `</div>`;
}

function chips(st, fields, alarming) {
  return fields.filter(f => st[f] !== undefined).map(f =>
    `<span class="chip${alarming && num(st[f]) > 0 ? " bad" : ""}">${words(f.replace(/^closed_/, ""))}${fig(f, st[f])}</span>`
  ).join("");
}

// Any table of counts in the figures (connect errors by class, ...).
function countTables(st) {
  let out = "";
  for (const [field, value] of Object.entries(st)) {
    if (NOT_TABLES[field] || !value || typeof value !== "object" || Array.isArray(value)) continue;
    const rows = Object.entries(value).filter(([, v]) => typeof v === "number");
    if (!rows.length) continue;
    rows.sort((a, b) => b[1] - a[1]);
    out += `<div class="sub" data-table="${esc(field)}"><h4>${esc(words(field))}</h4><table class="small">` +
      rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${fig(field + "." + k, v)}</td></tr>`).join("") +
      `</table></div>`;
  }
  return out;
}

function hogs(st) {
  const rows = list(st.hogs).filter(h => h && h.site !== undefined);
  if (!rows.length) return "";
  rows.sort((a, b) => num(b.total) - num(a.total));
  return `<div class="sub" data-hogs="${rows.length}"><h4>Connection hogs</h4><table class="small">
    <tr><th>site</th><th>count</th><th>total s</th><th>max s</th></tr>` +
    rows.slice(0, 8).map(h => `<tr><td>${esc(h.site)}</td><td>${fmt(h.count)}</td>
      <td>${fmt(h.total)}</td><td>${fmt(h.max)}</td></tr>`).join("") + `</table></div>`;
}

function poolCard(worker, st) {
  const health = st.health || { status: "ok", reasons: [] };
  const status = health.status || "ok";
  const reasons = list(health.reasons);
  return `<article class="pool s-${esc(status)}" data-pid="${esc(worker.pid)}" data-pool="${esc(st.name)}" data-status="${esc(status)}">
    <header><h3>${esc(st.name)}</h3><span class="pid">pid ${esc(worker.pid)}</span>
      <span class="pill">${esc(status)}</span></header>
    ${reasons.length ? `<ul class="reasons">${reasons.map(r => `<li>${esc(r)}</li>`).join("")}</ul>` : ""}
    ${gaugeBar(st)}${figures(st)}${chart(st, num(worker.time))}
    <div class="chips">${chips(st, ["queries", "acquired", "created"], false)}</div>
    <div class="chips">${chips(st, INCIDENTS, true)}</div>
    <div class="chips"><span class="chip">closed by reason:</span>${chips(st, CLOSES, false)}</div>
    ${countTables(st)}${hogs(st)}</article>`;
}

function totalsTable(totals) {
  if (!totals || !totals.length) return "";
  const head = TOTALS.map(f => `<th>${words(f === "total" ? "open" : f)}</th>`).join("");
  const rows = totals.map(t => `<tr class="s-${esc(t.status)}" data-total-pool="${esc(t.name)}">
    <td><b>${esc(t.name)}</b> <span class="pill">${esc(t.status)}</span></td>` +
    TOTALS.map(f => `<td>${fig(f, t[f])}</td>`).join("") + `</tr>`).join("");
  return `<h2 class="section">All workers</h2><table class="totals"><tr><th>pool</th>${head}</tr>${rows}</table>`;
}

// Queries a second over every process: each one's since its previous
// snapshot, by its own clock (published: pgpool.nginx's ngx.now(); else the
// snapshot's time, in whole seconds).
function queryRate(d) {
  let total = 0;
  const next = {};
  for (const w of d.workers) {
    let queries = 0;
    for (const st of list(w.pools)) queries += num(st.queries);
    const time = num(w.published) || num(w.time), before = rates[w.pid];
    let rate = before ? before.rate : 0;
    if (before && time > before.time && queries >= before.queries) {
      rate = (queries - before.queries) / (time - before.time);
    }
    next[w.pid] = before && time <= before.time ? before : { time, queries, rate };
    total += rate;
  }
  rates = next;
  return Math.round(total).toLocaleString("en-US");
}

function render(data, error) {
  const d = normalize(data || {});
  const cards = [], statuses = [];
  for (const w of d.workers) for (const st of list(w.pools)) {
    cards.push(poolCard(w, st));
    statuses.push(st.health ? st.health.status : "ok");
  }
  const status = worst([d.status || "ok"].concat(statuses));
  const pill = document.getElementById("status");
  pill.className = "pill s-" + (error ? "stale" : status);
  pill.textContent = error ? "stale" : status;
  document.getElementById("live").className = error ? "live off" : "live";
  const pids = d.workers.map(w => w.pid);
  document.getElementById("meta").textContent =
    `${pids.length} process${pids.length === 1 ? "" : "es"} · ${cards.length} pool${cards.length === 1 ? "" : "s"} · ` +
    (error ? "last update failed" : `${queryRate(d)} queries/s · updated ` + new Date().toLocaleTimeString("en-GB"));
  body.dataset.workers = pids.join(" ");
  document.getElementById("main").innerHTML =
    (error ? `<div class="banner">Cannot read ${esc(DATA_URL)}: ${esc(error)}</div>` : "") +
    totalsTable(d.totals) + `<h2 class="section">Pools by process</h2>` +
    (cards.length ? `<div class="grid">${cards.join("")}</div>` : `<div class="empty">No pool configured yet.</div>`);
  body.dataset.renders = ++renders;
}

async function poll() {
  try {
    const answer = await fetch(DATA_URL, { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    last = await answer.json();
    render(last);
  } catch (e) {
    render(last, e.message || String(e));
  }
  setTimeout(poll, REFRESH_MS);
}
poll();
]==]

local function html_escape(s)
  return (tostring(s):gsub("[&<>\"']", function(c) return format("&#%d;", c:byte()) end))
end

-- opts: data_url (default "data": relative to the page), title (default
-- "pgpool"), refresh (seconds between polls, default 1).
function M.html(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'pgpool.dashboard_html' (options must be a table)", 2)
  end
  opts = opts or {}
  local data_url = opts.data_url or "data"
  local title = opts.title or "pgpool"
  local refresh = opts.refresh or 1
  if type(data_url) ~= "string" or data_url == "" then
    error("bad argument #1 to 'pgpool.dashboard_html' (option 'data_url' must be a non-empty string)", 2)
  end
  if type(refresh) ~= "number" or not (refresh >= 0.25 and refresh <= 60) then
    error("bad argument #1 to 'pgpool.dashboard_html' (option 'refresh' must be seconds, 0.25 to 60)", 2)
  end
  return table.concat{
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width,initial-scale=1">',
    '<link rel="icon" href="data:,">',             -- no favicon request
    "<title>", html_escape(title), "</title><style>", CSS, "</style></head>\n",
    '<body data-url="', html_escape(data_url), '" data-refresh="', tostring(tonumber(refresh)), '">',
    '<header class="top"><span class="live off" id="live"></span><h1>', html_escape(title), "</h1>",
    '<span class="pill s-stale" id="status">loading</span><span class="meta" id="meta"></span></header>',
    '<main id="main"><div class="empty">Loading…</div></main>',
    "<script>", SCRIPT, "</script></body></html>\n",
  }
end

return M
