/** Small formatting helpers shared by the pages. */

export const pad = (n, width = 2) => String(n).padStart(width, "0");

/** HH:MM:SS of a Date, local time. */
const hms = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

/** HH:MM:SS.mmm, local time. */
export function clock(ts) {
  const d = new Date(ts);
  return `${hms(d)}.${pad(d.getMilliseconds(), 3)}`;
}

/** Local date and time to the second ("–" for none). */
export function dateTime(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return `${d.toLocaleDateString()} ${hms(d)}`;
}

/** Today: HH:MM:SS; other days: the date too. */
export function shortTime(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return d.toDateString() === new Date().toDateString() ? hms(d) : dateTime(ts);
}

/** A duration in milliseconds, as people read it. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

/** Thousands separators. */
export const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());

/** The page's connection indicator (#connection) from a feed's onState report. */
export function showConnection(el, { transport, state, reason }) {
  el.dataset.transport = transport || "";
  el.dataset.state = state;
  const how = transport === "pusher" ? "Pusher" : transport || "";
  const label = {
    live: `live · ${how}`,
    "catching-up": "catching up",
    connecting: "connecting",
    polling: "polling",
    offline: "offline",
  }[state] || state;
  el.querySelector(".label").textContent = label;
  el.title = reason ? `${label}: ${reason}` : label;
}
