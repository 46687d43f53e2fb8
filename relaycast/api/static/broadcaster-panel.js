/**
 * The broadcaster panel of the runs list (/ui/): a card per broadcaster (state, today's usage
 * against its quota, errors, sent, p95 latency, messages per minute over the last hour) and
 * the pipeline's figures, from GET /admin/broadcaster-status.
 */

import { num, pad } from "./format.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

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

export function renderStatus(report) {
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
