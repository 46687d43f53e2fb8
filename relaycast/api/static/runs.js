/**
 * The runs list (/ui/): recent runs, updated live from admin events (started, finished,
 * failed, lost) and re-read from GET /runs (at once after an event, for line counts; every poll
 * interval when live events are not available), and the broadcaster panel
 * (broadcaster-panel.js) from GET /admin/broadcaster-status.
 */

import { renderStatus } from "./broadcaster-panel.js";
import { duration, num, shortTime, showConnection } from "./format.js";
import { connectAdminEvents, getJson } from "./relaycast.js";

const $ = (id) => document.getElementById(id);
const RUNS_LIMIT = 100;
const TERMINAL = new Set(["succeeded", "failed", "lost"]);
// A run's end event -> its status ("lost": its worker died; a real end may still follow).
const END_STATUS = { finished: "succeeded", failed: "failed", lost: "lost" };

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
        showFailure("runs", "Runs", error);
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
  } else if (END_STATUS[event.type] && id) {
    const known = runs.get(id) || { run_id: id, workflow: event.workflow, lines: 0 };
    runs.set(id, {
      ...known, status: END_STATUS[event.type], finished_at: event.ts,
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

/** A load that failed: signed out, or what is unavailable and why. */
function showFailure(key, what, error) {
  showNotice(key, error.status === 401 ? "Signed out: open the sign-in link again." : `${what} unavailable: ${error.message}`);
}

// Broadcaster panel (broadcaster-panel.js) -----------------------------------------------------

async function loadStatus() {
  try {
    renderStatus(await getJson("admin/broadcaster-status"));
    hideNotice("status");
  } catch (error) {
    showFailure("status", "Broadcaster status", error);
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
