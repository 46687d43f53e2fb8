/**
 * The runs list (/ui/): recent runs, updated live from admin events (started, finished,
 * failed) and re-read from GET /runs (at once after an event, for line counts; every poll
 * interval when live events are not available), and the broadcaster panel from
 * GET /admin/broadcaster-status.
 */

import { duration, num, pad, shortTime, showConnection } from "./format.js";
import { connectAdminEvents, getJson } from "./relaycast.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const RUNS_LIMIT = 100;
const TERMINAL = new Set(["succeeded", "failed"]);

const runs = new Map(); // run_id -> run (GET /runs shape)
const rows = new Map(); // run_id -> <tr>
let feedState = { transport: null, state: "connecting" };

// Runs table ---------------------------------------------------------------------------------

function cell(tr, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function makeRow(run) {
  const tr = document.createElement("tr");
  tr.dataset.runId = run.run_id;
  cell(tr, "workflow");
  const idCell = cell(tr, "run-id");
  const link = document.createElement("a");
  link.href = `runs/${encodeURIComponent(run.run_id)}`;
  link.textContent = run.run_id;
  idCell.appendChild(link);
  const status = document.createElement("span");
  status.className = "status";
  cell(tr, "").appendChild(status);
  cell(tr, "when");
  cell(tr, "num duration");
  cell(tr, "num lines");
  return tr;
}

function fillRow(tr, run) {
  const [workflow, , statusCell, when, dur, lines] = tr.children;
  tr.dataset.status = run.status || "";
  workflow.textContent = run.workflow || "–";
  const status = statusCell.firstChild;
  status.dataset.status = run.status || "";
  status.textContent = run.status || "unknown";
  if (run.error) status.title = run.error;
  when.textContent = shortTime(run.started_at);
  when.title = run.started_at ? new Date(run.started_at).toString() : "";
  const end = run.finished_at || (run.status === "running" ? Date.now() : null);
  dur.textContent = run.duration_s !== null && run.duration_s !== undefined && run.finished_at
    ? duration(run.duration_s * 1000)
    : end && run.started_at ? duration(end - run.started_at) : "–";
  lines.textContent = num(run.lines || 0);
}

/** The workflow filter's choices: the workflows the API knows, and any a run shows. */
const workflowNames = new Set();

function addWorkflowChoices(names) {
  const select = $("workflow-filter");
  for (const name of names) {
    if (!name || workflowNames.has(name)) continue;
    workflowNames.add(name);
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    const after = [...select.options].slice(1).find((o) => o.value > name);
    select.insertBefore(option, after || null);
  }
}

function renderRuns(animate = true) {
  const filter = $("status-filter").value;
  const workflow = $("workflow-filter").value;
  const body = $("runs-body");
  const ordered = [...runs.values()]
    .filter((r) => !filter || r.status === filter)
    .filter((r) => !workflow || r.workflow === workflow)
    .sort((a, b) => (b.started_at || 0) - (a.started_at || 0))
    .slice(0, RUNS_LIMIT);
  if (!ordered.length) {
    body.textContent = "";
    const tr = document.createElement("tr");
    tr.className = "empty-row";
    const td = cell(tr, "");
    td.colSpan = 6;
    td.textContent = filter || workflow
      ? `No ${[filter, workflow].filter(Boolean).join(" ")} runs.`
      : "No runs yet. Start one: relaycast run WORKFLOW (relaycast workflows lists them)";
    body.appendChild(tr);
    return;
  }
  const keep = new Set(ordered.map((r) => r.run_id));
  for (const [id, tr] of rows) {
    if (!keep.has(id)) {
      tr.remove();
      rows.delete(id);
    }
  }
  body.querySelectorAll(".empty-row").forEach((tr) => tr.remove());
  let before = body.firstChild;
  for (const run of ordered) {
    let tr = rows.get(run.run_id);
    if (!tr) {
      tr = makeRow(run);
      rows.set(run.run_id, tr);
      if (animate) tr.classList.add("fresh");
    }
    fillRow(tr, run);
    if (tr !== before) body.insertBefore(tr, before);
    before = tr.nextSibling;
  }
}

let loadedOnce = false;

/** Merge GET /runs: the server's record wins, except that a run seen ending here does not go
 * back to "running" because of an answer that was already on its way. */
function merge(fresh) {
  for (const run of fresh) {
    const known = runs.get(run.run_id);
    if (known && TERMINAL.has(known.status) && run.status === "running" && known.started_at === run.started_at) {
      runs.set(run.run_id, { ...run, status: known.status, finished_at: known.finished_at, duration_s: known.duration_s });
    } else {
      runs.set(run.run_id, run);
    }
  }
}

let loading = null;
let reloadAgain = false;

async function loadRuns() {
  if (loading) {
    reloadAgain = true;
    return loading;
  }
  loading = (async () => {
    do {
      reloadAgain = false;
      const animate = loadedOnce; // rows of the first load are not "new"
      try {
        const workflow = $("workflow-filter").value;
        const answer = await getJson("runs", workflow ? { limit: RUNS_LIMIT, workflow } : { limit: RUNS_LIMIT });
        merge(answer.runs);
        addWorkflowChoices(answer.runs.map((r) => r.workflow));
        loadedOnce = true;
        hideNotice("runs");
      } catch (error) {
        showNotice("runs", error.status === 401 ? "Signed out: open the sign-in link again." : `Runs unavailable: ${error.message}`);
      }
      renderRuns(animate);
    } while (reloadAgain);
  })().finally(() => {
    loading = null;
  });
  return loading;
}

let eventReload = 0;

function onAdminEvent(event) {
  const id = event.run_id;
  if (event.type === "started" && id) {
    const known = runs.get(id) || {};
    runs.set(id, {
      ...known, run_id: id, workflow: event.workflow, status: "running", started_at: event.ts,
      finished_at: null, duration_s: null, error: null, lines: known.lines || 0,
    });
    addWorkflowChoices([event.workflow]);
  } else if ((event.type === "finished" || event.type === "failed") && id) {
    const known = runs.get(id) || { run_id: id, workflow: event.workflow, lines: 0 };
    runs.set(id, {
      ...known, status: event.type === "finished" ? "succeeded" : "failed", finished_at: event.ts,
      duration_s: event.duration_s, error: event.error || null,
      started_at: known.started_at || (event.ts - (event.duration_s || 0) * 1000),
    });
  } else if (event.type === "provider-changed") {
    const how = event.transport === "polling" ? " (this page now polls)" : "";
    showNotice("provider", `Broadcaster changed: ${event.from || "–"} → ${event.to || "–"}${how}${event.reason ? ` · ${event.reason}` : ""}`, 15000);
    loadStatus();
  }
  renderRuns();
  // Line counts and anything the event does not carry: re-read soon (once per burst).
  clearTimeout(eventReload);
  eventReload = setTimeout(loadRuns, 400);
}

// Notices ------------------------------------------------------------------------------------

const notices = new Map();

function showNotice(key, text, ttlMs) {
  notices.set(key, text);
  paintNotices();
  if (ttlMs) setTimeout(() => hideNotice(key), ttlMs);
}

function hideNotice(key) {
  if (notices.delete(key)) paintNotices();
}

function paintNotices() {
  const el = $("notice");
  el.textContent = [...notices.values()].join(" · ");
  el.hidden = notices.size === 0;
}

// Broadcaster panel --------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function stat(value, key) {
  const box = el("div", "stat");
  box.appendChild(el("span", "v", value));
  box.appendChild(el("span", "k", key));
  return box;
}

function sparkline(series, untilS) {
  const wrap = el("div", "spark-wrap");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 44");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...series);
  const total = series.reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `messages per minute, last hour: ${total} in all, at most ${max} a minute`);
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", "300");
  base.setAttribute("y1", "43.5");
  base.setAttribute("y2", "43.5");
  svg.appendChild(base);
  const w = 300 / series.length;
  series.forEach((value, i) => {
    if (!value) return;
    const h = Math.max(2, (value / max) * 42);
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", (i * w + 0.5).toFixed(2));
    rect.setAttribute("width", Math.max(1, w - 1).toFixed(2));
    rect.setAttribute("y", (43 - h).toFixed(2));
    rect.setAttribute("height", h.toFixed(2));
    if (i === series.length - 1) rect.setAttribute("class", "now");
    const title = document.createElementNS(SVG, "title");
    const minuteStart = new Date((untilS - (series.length - i) * 60) * 1000);
    title.textContent = `${minuteStart.getHours()}:${pad(minuteStart.getMinutes())} · ${value} messages`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  if (!total) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", "150");
    text.setAttribute("y", "26");
    text.setAttribute("text-anchor", "middle");
    text.textContent = "no messages in the last hour";
    svg.appendChild(text);
  }
  wrap.appendChild(svg);
  const label = el("div", "spark-label");
  label.appendChild(el("span", "", "60 min ago"));
  label.appendChild(el("span", "", `messages / minute · peak ${num(max === 1 && !total ? 0 : max)}`));
  label.appendChild(el("span", "", "now"));
  wrap.appendChild(label);
  return wrap;
}

function renderStatus(report) {
  const active = report.active_broadcaster || "";
  const activeEl = $("active-broadcaster");
  activeEl.textContent = active || "none yet";
  activeEl.dataset.active = active;
  const age = Math.max(0, Date.now() / 1000 - report.generated_at);
  $("report-age").textContent = report.stale
    ? `figures computed now: no report from celery beat in the last two intervals${report.problems.length ? " · degraded" : ""}`
    : `${report.healthy ? "healthy" : "degraded"} · health report ${Math.round(age)} s old`;

  const grid = $("broadcasters");
  grid.textContent = "";
  for (const b of report.broadcasters) {
    const card = el("article", "bc");
    card.dataset.name = b.name;
    card.dataset.state = b.state;
    card.dataset.active = String(b.name === active);
    const title = el("div", "bc-title");
    title.appendChild(el("span", "bc-name", b.name));
    if (b.name === active) title.appendChild(el("span", "tag active", "active"));
    title.appendChild(el("span", "spacer"));
    const state = el("span", "tag", b.state);
    state.dataset.state = b.state;
    title.appendChild(state);
    card.appendChild(title);
    if (b.state !== "enabled") {
      const until = b.until ? ` until ${new Date(b.until * 1000).toLocaleString()}` : "";
      card.appendChild(el("div", "bc-reason", `${b.reason || b.state}${until}`));
    }
    const usage = el("div", "usage");
    const label = el("div", "usage-label");
    const track = el("div", "bar-track");
    const fill = el("div", "bar-fill");
    if (b.daily_quota) {
      const fraction = Math.min(1, b.usage_today / b.daily_quota);
      label.appendChild(el("span", "", `today ${num(b.usage_today)} / ${num(b.daily_quota)}`));
      label.appendChild(el("span", "", `${(fraction * 100).toFixed(fraction < 0.1 ? 1 : 0)} %`));
      fill.style.width = `${(fraction * 100).toFixed(2)}%`;
      if (fraction >= 1) fill.classList.add("bad");
      else if (b.quota_warning) fill.classList.add("warn");
    } else {
      label.appendChild(el("span", "", `today ${num(b.usage_today)}`));
      label.appendChild(el("span", "", "no quota"));
    }
    usage.appendChild(label);
    track.appendChild(fill);
    usage.appendChild(track);
    card.appendChild(usage);
    const stats = el("div", "bc-stats");
    stats.appendChild(stat(`${(b.error_rate_last_hour * 100).toFixed(1)} %`, "errors, 1 h"));
    stats.appendChild(stat(num(b.sent_last_hour), "sent, 1 h"));
    stats.appendChild(stat(b.latency_p95_ms === null ? "–" : `${b.latency_p95_ms} ms`, "p95 latency"));
    card.appendChild(stats);
    const series = (report.sent_per_minute && report.sent_per_minute[b.name]) || [];
    card.appendChild(sparkline(series.length ? series : new Array(60).fill(0), report.sent_per_minute_until || Date.now() / 1000));
    grid.appendChild(card);
  }

  const pipeline = $("pipeline");
  pipeline.textContent = "";
  const p = report.pipeline || {};
  pipeline.appendChild(el("span", "", `queue ${p.broadcast_queue_depth ?? "–"}`));
  pipeline.appendChild(el("span", "", `oldest unbroadcast ${p.oldest_unbroadcast_age_s === null || p.oldest_unbroadcast_age_s === undefined ? "–" : `${p.oldest_unbroadcast_age_s.toFixed(1)} s`}`));
  pipeline.appendChild(el("span", "", `dropped ${num(p.lines_dropped_last_hour || 0)} / 1 h`));
  pipeline.appendChild(el("span", "", `dead-lettered ${num(p.dead_lettered_last_hour || 0)} / 1 h`));
  if (p.occupancy && p.occupancy !== "off") {
    // Occupancy gating: lines of runs nobody watches are not published (history has them).
    const occupancy = el("span", "occupancy", `occupancy ${p.occupancy}: ${num(p.watched_channels || 0)} watched · ` +
      `today ${num(p.unwatched_lines_today || 0)} unwatched lines not published, ` +
      `${num(p.unwatched_messages_today || 0)} messages of quota saved`);
    occupancy.id = "occupancy";
    occupancy.dataset.state = p.occupancy;
    occupancy.dataset.savedToday = String(p.unwatched_messages_today || 0);
    pipeline.appendChild(occupancy);
  }
  for (const problem of report.problems || []) pipeline.appendChild(el("span", "problem", problem));
  for (const warning of report.warnings || []) pipeline.appendChild(el("span", "warning", warning));
}

async function loadStatus() {
  try {
    renderStatus(await getJson("admin/broadcaster-status"));
    hideNotice("status");
  } catch (error) {
    showNotice("status", error.status === 401 ? "Signed out: open the sign-in link again." : `Broadcaster status unavailable: ${error.message}`);
  }
}

// Wiring -------------------------------------------------------------------------------------

$("status-filter").addEventListener("change", renderRuns);
$("workflow-filter").addEventListener("change", () => {
  renderRuns();
  loadRuns(); // older runs of that workflow, beyond the latest of all
});
getJson("workflows").then((answer) => addWorkflowChoices(answer.workflows.map((w) => w.name)), () => {});

const admin = connectAdminEvents(onAdminEvent, {
  onState: (report) => {
    feedState = report;
    showConnection($("connection"), report);
  },
});

loadRuns();
loadStatus();

// Live events cover status changes; line counts of running runs, and everything when the
// page cannot receive events, come from re-reading GET /runs.
let lastLoad = Date.now();
setInterval(() => {
  const hasRunning = [...runs.values()].some((r) => r.status === "running");
  const pollMs = (admin.config() || {}).poll_interval_ms || 1000;
  const every = feedState.state === "live" ? (hasRunning ? 3000 : 15000) : pollMs;
  if (Date.now() - lastLoad >= every) {
    lastLoad = Date.now();
    loadRuns();
  }
  for (const [id, tr] of rows) {
    const run = runs.get(id);
    if (run && run.status === "running") fillRow(tr, run);
  }
}, 250);
setInterval(loadStatus, 10000);
