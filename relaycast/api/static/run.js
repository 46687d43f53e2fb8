/**
 * The run view (/ui/runs/{run_id}): one run's lines, live (the log itself: logview.js), with
 * level filter, text search, follow-tail, the selected line in full, downloads and the run's
 * status.
 */

import { dateTime, duration, showConnection } from "./format.js";
import { LogView } from "./logview.js";
import { connectAdminEvents, connectLogs, getJson } from "./relaycast.js";

const runId = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
const $ = (id) => document.getElementById(id);

// The page -----------------------------------------------------------------------------------

const view = new LogView($("log"));
const connection = $("connection");
// A run's end event -> its status ("lost": its worker died; a real end may still follow).
const END_STATUS = { finished: "succeeded", failed: "failed", lost: "lost" };
const statusEl = $("run-status");
let run = null; // GET /runs/{id}
let feedState = { transport: null, state: "connecting" };

document.title = `${runId} · relaycast`;
$("run-id").textContent = runId;
$("run-id").title = runId;
const enc = encodeURIComponent(runId);
$("download-ndjson").href = `../../runs/${enc}/logs.ndjson`;
$("download-txt").href = `../../runs/${enc}/logs.txt`;

function showState(report) {
  feedState = report;
  showConnection(connection, report);
}

function showRun() {
  const status = run && run.status ? run.status : "";
  statusEl.dataset.status = status;
  statusEl.textContent = status || (run ? "unknown" : "not started");
  $("run-workflow").textContent = (run && run.workflow) || "–";
  $("run-started").textContent = run && run.started_at ? dateTime(run.started_at) : "–";
  const error = $("run-error");
  error.hidden = !(run && run.error);
  error.textContent = (run && run.error) || "";
  tick();
}

function tick() {
  if (!run || !run.started_at) {
    $("run-duration").textContent = "–";
    return;
  }
  const end = run.finished_at || (run.status === "running" ? Date.now() : null);
  $("run-duration").textContent = end ? duration(end - run.started_at) : "–";
}

async function loadRun() {
  try {
    run = await getJson(`runs/${enc}`);
  } catch (error) {
    if (error.status !== 404) return;
  }
  showRun();
}

view.onSelect = (line) => {
  const detail = $("detail");
  if (!line) {
    detail.hidden = true;
    return;
  }
  $("detail-meta").textContent = `#${line.seq} · ${new Date(line.ts).toISOString()} · ${line.level}`;
  $("detail-message").textContent = line.message;
  const hasData = line.data && Object.keys(line.data).length;
  $("detail-data").textContent = hasData ? JSON.stringify(line.data, null, 2) : "";
  detail.hidden = false;
};

view.onChange = (v) => {
  $("run-lines").textContent = v.lines.length.toLocaleString();
  for (const button of document.querySelectorAll(".levels button")) {
    button.querySelector(".count").textContent = v.counts[button.dataset.level].toLocaleString();
  }
  $("match-count").textContent = v.filtering() ? `${v.size.toLocaleString()} shown` : "";
  const follow = $("follow");
  follow.setAttribute("aria-pressed", String(v.follow));
  follow.textContent = v.follow ? "Following" : v.unseen ? `Follow ↓ ${v.unseen.toLocaleString()} new` : "Follow ↓";
};

// Controls
for (const button of document.querySelectorAll(".levels button")) {
  button.addEventListener("click", () => {
    const level = button.dataset.level;
    if (view.levels.has(level)) view.levels.delete(level);
    else view.levels.add(level);
    button.setAttribute("aria-pressed", String(view.levels.has(level)));
    view.refilter();
  });
}
let searchTimer = 0;
$("search").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    view.needle = e.target.value.trim().toLowerCase();
    view.refilter();
  }, 120);
});
$("follow").addEventListener("click", () => view.setFollow(!view.follow));
$("detail-close").addEventListener("click", () => view.unselect());
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && document.activeElement !== $("search")) {
    e.preventDefault();
    $("search").focus();
  } else if (e.key === "Escape") {
    view.unselect();
  }
});

// Data sources
const feed = connectLogs(runId, { onLines: (lines) => view.append(lines), onState: showState });
const adminEvents = []; // the last 100, for automation (relaycastView.adminEvents())
connectAdminEvents((event) => {
  adminEvents.push(event);
  if (adminEvents.length > 100) adminEvents.shift();
  if (event.run_id !== runId) return;
  if (event.type === "started") run = { ...(run || {}), status: "running", started_at: event.ts, finished_at: null, workflow: event.workflow };
  if (END_STATUS[event.type]) {
    run = { ...(run || {}), status: END_STATUS[event.type], finished_at: event.ts, error: event.error || null };
    // The run's last lines are flushed as it ends: make sure none was missed live.
    setTimeout(() => feed.refresh(), 1000);
    setTimeout(() => feed.refresh(), 5000);
  }
  showRun();
  loadRun();
});

loadRun();
setInterval(tick, 1000);
// Without live admin events (polling), the run's status is re-read; while live, rarely.
let lastRunLoad = 0;
setInterval(() => {
  const live = feedState.state === "live";
  const every = !run || run.status === "running" ? (live ? 15000 : 2000) : 30000;
  if (Date.now() - lastRunLoad >= every) {
    lastRunLoad = Date.now();
    loadRun();
  }
}, 1000);

// For people's automation and the tests (see the README's DOM contract).
window.relaycastView = {
  seqs: () => view.seqs(),
  lineCount: () => view.lines.length,
  rendered: () => view.rendered(),
  renderNow: () => view.render(),
  stats: () => ({ ...feed.stats, renders: view.renders }),
  state: () => feed.state(),
  follow: () => view.follow,
  setFollow: (on) => view.setFollow(Boolean(on)),
  adminEvents: () => [...adminEvents],
};
