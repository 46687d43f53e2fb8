/** The public functions of relaycast.js: each makes a feed and attaches it to its API root's hub. */

import { AdminFeed, AppFeed } from "./events.js";
import { DEFAULT_BASE } from "./http.js";
import { hubFor } from "./hub.js";
import { LogFeed } from "./logs.js";

/** The feed `make(hub)` makes, attached to the hub of `baseUrl` with `headers`. */
function attached(baseUrl, headers, make) {
  const hub = hubFor(baseUrl, headers);
  const feed = make(hub);
  hub.attach(feed);
  return feed;
}

/**
 * Follow run `runId`'s lines. `onLines(lines)` gets new lines ({seq, ts, level, message,
 * data}) each exactly once, in increasing seq order; `onState({transport, state, reason})`
 * reports how they arrive. Options: `baseUrl` (the API root; default: where relaycast.js is
 * served from), `headers` (e.g. {Authorization: "Bearer …"} for a page without the session
 * cookie). Returns {close(), refresh(), stats, state(), lastSeq()}.
 */
export function connectLogs(runId, { onLines, onState, baseUrl = DEFAULT_BASE, headers = {} } = {}) {
  const feed = attached(baseUrl, headers, (hub) => new LogFeed(hub, String(runId), { onLines, onState }));
  return {
    close: () => feed.close(),
    /** Catch up from history now (e.g. when the run ended: its last message may be late). */
    refresh: () => feed.catchUp().catch(() => {}),
    stats: feed.stats,
    state: () => feed.report(),
    lastSeq: () => feed.lastSeq,
  };
}

/**
 * Admin events ({type: "started" | "finished" | "failed" | "provider-changed" | …, ...data}).
 * A provider change noticed through /ui/config (the announcement travelled by a broadcaster
 * this browser cannot hear) is delivered too, with `source: "config"`. Returns {close(),
 * state(), config()} (config(): the last /ui/config read, null before the first).
 */
export function connectAdminEvents(onEvent, { onState, baseUrl = DEFAULT_BASE, headers = {} } = {}) {
  const feed = attached(baseUrl, headers, (hub) => new AdminFeed(hub, onEvent, onState));
  return {
    close: () => feed.close(),
    state: () => feed.report(),
    config: () => feed.hub.config,
  };
}

/**
 * An application channel (Laravel Echo's `Echo.private(name)`): `name` as the server's
 * `broadcast(name, event, data)` got it (the channel prefix is added here). `.listen(event,
 * cb)` calls `cb(data)` for each event of that name, in the order the server emitted them
 * (per emitting process); `.stopListening(event, cb?)`; both return the channel. Options as
 * connectAdminEvents (`onState`, `baseUrl`, `headers`). Returns {listen, stopListening,
 * close(), state()}.
 */
export function channel(name, { onState, baseUrl = DEFAULT_BASE, headers = {} } = {}) {
  const feed = attached(baseUrl, headers, (hub) => new AppFeed(hub, String(name), onState));
  const subscription = {
    listen(event, callback) {
      if (!feed.listeners.has(event)) feed.listeners.set(event, new Set());
      feed.listeners.get(event).add(callback);
      return subscription;
    },
    stopListening(event, callback) {
      if (callback) feed.listeners.get(event)?.delete(callback);
      else feed.listeners.delete(event);
      return subscription;
    },
    close: () => feed.close(),
    state: () => feed.report(),
  };
  return subscription;
}

/** A client bound to one API root: `connect({baseUrl, headers}).channel(name).listen(...)`. */
export function connect(options = {}) {
  return { channel: (name, more = {}) => channel(name, { ...options, ...more }) };
}
