/**
 * relaycast.js: the browser client of relaycast (an ES module, no build step).
 *
 *   import { connectLogs, connectAdminEvents } from "/ui/static/relaycast.js";
 *
 *   const logs = connectLogs("etl-42", {
 *     onLines: (lines) => lines.forEach(show),        // new lines: each once, in seq order
 *     onState: ({ transport, state }) => badge(state), // see STATES
 *   });
 *   const admin = connectAdminEvents((event) => console.log(event.type, event));
 *   const orders = channel("orders").listen("shipped", (data) => notify(data)); // app events
 *   // later: logs.close(); admin.close(); orders.close();
 *
 * The transport is chosen by the server (GET /ui/config), never by the page: "pusher"
 * (pusher-js, loaded from vendor/ beside this file only when needed) or "polling" (the
 * history endpoint). Whatever happens to the live connection, the view is complete: the
 * client subscribes FIRST, then loads history (GET /runs/{id}/logs?after_seq=, paged by
 * next_after_seq), merges by seq and drops repeats, fetches any gap (and any line the
 * provider's size limit truncated) from history, catches
 * up after every (re)subscription, and polls history whenever live delivery is not
 * possible (config says "polling", or the WebSocket is down for more than a moment). Only
 * the latency changes.
 *
 * Transports are connectors (after Laravel Echo's): an object made by a factory
 * registered with registerConnector(name, (config, http) => connector), with
 *
 *   connector.status                       "connecting" | "connected" | "down"
 *   connector.onStatus(cb) -> off()         cb(status) on every change
 *   connector.subscribe(channel, {onEvent(name, data), onSubscribed(), onError(err)})
 *                          -> { unsubscribe() }
 *                                          onSubscribed fires after EVERY (re)subscription:
 *                                          the client catches up from history then
 *   connector.close()
 *
 * "polling" needs no connector; "pusher" and "socketio" are registered below.
 *
 * Application events (Python: `relaycast.broadcast("orders", "shipped", data)`) arrive through
 * `channel(name).listen(event, cb)`, Laravel Echo's shape, over the same connector. They are
 * stored nowhere, so with no live transport ("polling") they cannot be delivered: the
 * channel's state is then "offline" with that reason.
 */

const MODULE_URL = new URL(import.meta.url);
/** The API root: this module is served at <root>/ui/static/relaycast.js. */
const DEFAULT_BASE = new URL("../../", MODULE_URL);

/** Values of onState's `state` (and of #connection[data-state] in the pages). */
export const STATES = Object.freeze({
  CONNECTING: "connecting", // no line source yet, or the live connection dropped a moment ago
  LIVE: "live", // subscribed and caught up: lines arrive as they are broadcast
  CATCHING_UP: "catching-up", // (re)subscribed, loading what was missed from history
  POLLING: "polling", // no live delivery: polling the history endpoint
  OFFLINE: "offline", // neither live delivery nor the API can be reached
});

/** Largest history page the API serves; the first page is smaller so a view paints early. */
const HISTORY_PAGE = 10000;
const FIRST_HISTORY_PAGE = 2000;
/** A dropped WebSocket gets this long to come back before the client polls. */
const FALLBACK_AFTER_MS = 2000;
/** A first subscription gets this long before the client polls meanwhile. */
const FIRST_SUBSCRIPTION_MS = 5000;
/** A gap in live lines waits this long for the missing lines before history fills it. */
const GAP_WAIT_MS = 300;
const MAX_BACKOFF_MS = 10000;

// ---------------------------------------------------------------------------------------------
// HTTP

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Http {
  constructor(baseUrl, headers) {
    this.base = new URL(baseUrl, location.href);
    if (!this.base.pathname.endsWith("/")) this.base.pathname += "/";
    this.headers = { ...headers };
  }

  url(path, params) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    return url;
  }

  /** URL of a file served beside this module (e.g. "vendor/pusher.min.js"). */
  asset(path) {
    return new URL(path, MODULE_URL);
  }

  async get(path, params) {
    let answer;
    try {
      answer = await fetch(this.url(path, params), {
        headers: { Accept: "application/json", ...this.headers },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      throw new HttpError(0, `network error: ${error.message}`);
    }
    if (!answer.ok) {
      let detail = answer.statusText;
      try {
        detail = (await answer.json()).detail || detail;
      } catch (_) {
        /* not JSON */
      }
      throw new HttpError(answer.status, `${answer.status} ${detail}`);
    }
    return answer.json();
  }
}

/** GET a JSON endpoint of the API (same options as connectLogs: baseUrl, headers). */
export function getJson(path, params, { baseUrl = DEFAULT_BASE, headers = {} } = {}) {
  return new Http(baseUrl, headers).get(path, params);
}

// ---------------------------------------------------------------------------------------------
// Connectors

const connectorFactories = new Map();

/** Make `name` (a value of /ui/config's `transport`) a live transport. */
export function registerConnector(name, factory) {
  connectorFactories.set(name, factory);
}

const scripts = new Map();

/** Load a vendored browser build once; resolve with the global it defines (window[name]). */
function loadScript(url, name) {
  if (window[name]) return Promise.resolve(window[name]);
  if (!scripts.has(name)) {
    scripts.set(name, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url.href;
      script.async = true;
      script.onload = () => (window[name] ? resolve(window[name]) : reject(new Error(`no ${name}`)));
      script.onerror = () => {
        scripts.delete(name);
        reject(new Error(`could not load ${url.href}`));
      };
      document.head.appendChild(script);
    }));
  }
  return scripts.get(name);
}

/** pusher-js connection states → connector status. */
const PUSHER_STATUS = {
  initialized: "connecting",
  connecting: "connecting",
  connected: "connected",
  unavailable: "down",
  failed: "down",
  disconnected: "down",
};
/** While the connection is lost, reconnect after these delays (then every last one): pusher-js
 * alone waits 15 s, then 30 s, then 60 s between attempts once a server stops answering. */
const RECONNECT_DELAYS_MS = [3000, 6000, 10000];

/** What every connector shares: its name, its status, and who listens to the status. */
class Connector {
  constructor(name) {
    this.name = name;
    this.status = "connecting";
    this.listeners = new Set();
    this.closed = false;
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    for (const cb of [...this.listeners]) cb(status);
  }

  onStatus(cb) {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }
}

class PusherConnector extends Connector {
  constructor(config, http) {
    super("pusher");
    this.channels = new Map(); // channel name -> {channel, handlers: Set}
    this.pusher = null;
    this.retries = 0;
    this.retryTimer = null;
    this.wasConnected = false;
    loadScript(http.asset("vendor/pusher.min.js"), "Pusher").then(
      (Pusher) => {
        if (this.closed) return;
        const p = config.pusher;
        const options = {
          cluster: p.cluster || "mt1", // required by pusher-js even with wsHost
          forceTLS: Boolean(p.forceTLS),
          enabledTransports: ["ws", "wss"], // WebSockets only: nothing loaded from elsewhere
          unavailableTimeout: 4000,
          channelAuthorization: {
            endpoint: http.url("pusher/auth").href, // the session cookie (same origin) authorises it
            transport: "ajax",
            headers: http.headers,
          },
        };
        if (p.wsHost) {
          options.wsHost = p.wsHost;
          if (p.wsPort) {
            options.wsPort = p.wsPort;
            options.wssPort = p.wsPort;
          }
        }
        this.pusher = new Pusher(p.key, options);
        this.pusher.connection.bind("state_change", ({ current }) => this._pusherState(current));
        for (const [name, entry] of this.channels) this._bindChannel(name, entry);
      },
      () => this._setStatus("down"),
    );
  }

  _pusherState(current) {
    const status = PUSHER_STATUS[current] || "connecting";
    if (status === "connected") {
      this.wasConnected = true;
      this.retries = 0;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    } else if (!this.retryTimer && !this.closed && (status === "down" || this.wasConnected)) {
      this._scheduleRetry();
    }
    this._setStatus(status);
  }

  _scheduleRetry() {
    const delay = RECONNECT_DELAYS_MS[Math.min(this.retries, RECONNECT_DELAYS_MS.length - 1)];
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.closed || !this.pusher || this.pusher.connection.state === "connected") return;
      this.retries += 1;
      this.pusher.disconnect(); // abandon pusher-js's long back-off: try now
      this.pusher.connect();
    }, delay);
  }

  _bindChannel(name, entry) {
    entry.channel = this.pusher.subscribe(name);
    for (const h of entry.handlers) this._bindHandler(entry.channel, h);
  }

  _bindHandler(channel, h) {
    channel.bind("pusher:subscription_succeeded", h.succeeded);
    channel.bind("pusher:subscription_error", h.error);
    channel.bind_global(h.any);
    if (channel.subscribed) queueMicrotask(h.succeeded);
  }

  subscribe(name, { onEvent, onSubscribed, onError }) {
    const h = {
      succeeded: () => onSubscribed && onSubscribed(),
      error: (err) => onError && onError(err),
      any: (event, data) => {
        if (!event.startsWith("pusher:") && !event.startsWith("pusher_internal:")) onEvent(event, data);
      },
    };
    let entry = this.channels.get(name);
    if (!entry) {
      entry = { channel: null, handlers: new Set() };
      this.channels.set(name, entry);
    }
    entry.handlers.add(h);
    if (this.pusher) {
      if (!entry.channel) this._bindChannel(name, entry);
      else this._bindHandler(entry.channel, h);
    }
    return {
      unsubscribe: () => {
        entry.handlers.delete(h);
        if (entry.channel) {
          entry.channel.unbind("pusher:subscription_succeeded", h.succeeded);
          entry.channel.unbind("pusher:subscription_error", h.error);
          entry.channel.unbind_global(h.any);
        }
        if (entry.handlers.size === 0) {
          this.channels.delete(name);
          if (this.pusher && entry.channel) this.pusher.unsubscribe(name);
        }
      },
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.pusher) this.pusher.disconnect();
    this.listeners.clear();
  }
}

registerConnector("pusher", (config, http) => new PusherConnector(config, http));

/**
 * Socket.IO (relaycast socketio): one socket per subscribed channel, so that every event a
 * socket receives belongs to its channel (Socket.IO events carry no channel name). A socket
 * asks for its channel with a `subscribe` event and the server's ack; after every reconnect
 * it asks again, and onSubscribed makes the feed catch up from history. The session cookie
 * (same site) or a bearer token from `headers` authorises it.
 */
class SocketIOConnector extends Connector {
  constructor(config, http) {
    super("socketio");
    this.subs = new Set();
    const s = config.socketio || {};
    this.url = s.url || `${location.protocol}//${location.hostname}:${s.port || 8001}`;
    const bearer = (http.headers.Authorization || http.headers.authorization || "").replace(/^Bearer\s+/i, "");
    this.auth = bearer ? { token: bearer } : {};
    this.io = null;
    loadScript(http.asset("vendor/socket.io.min.js"), "io").then(
      (io) => {
        if (this.closed) return;
        this.io = io;
        for (const sub of this.subs) this._open(sub);
      },
      () => this._setStatus("down"),
    );
  }

  /** The worst of the sockets' states: any down is down; all connected is connected. */
  _update() {
    const states = [...this.subs].map((sub) => sub.status);
    if (states.includes("down")) this._setStatus("down");
    else if (states.length && states.every((s) => s === "connected")) this._setStatus("connected");
    else this._setStatus("connecting");
  }

  _open(sub) {
    const socket = this.io(this.url, {
      transports: ["websocket"], // no long-polling: nothing cross-origin but the WebSocket
      forceNew: true,
      withCredentials: true,
      auth: this.auth,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
    });
    sub.socket = socket;
    socket.on("connect", () => {
      sub.status = "connected";
      this._update();
      socket.emit("subscribe", { channel: sub.channel }, (ack) => {
        if (ack && ack.ok) sub.handlers.onSubscribed && sub.handlers.onSubscribed();
        else sub.handlers.onError && sub.handlers.onError({ status: 403, message: ack && ack.error });
      });
    });
    socket.on("disconnect", () => {
      sub.status = "down";
      this._update();
    });
    socket.on("connect_error", () => {
      sub.status = "down";
      this._update();
    });
    socket.onAny((event, data) => sub.handlers.onEvent(event, data));
  }

  subscribe(channel, handlers) {
    const sub = { channel, handlers, socket: null, status: "connecting" };
    this.subs.add(sub);
    if (this.io) this._open(sub);
    this._update();
    return {
      unsubscribe: () => {
        this.subs.delete(sub);
        if (sub.socket) sub.socket.disconnect();
        this._update();
      },
    };
  }

  close() {
    this.closed = true;
    for (const sub of this.subs) if (sub.socket) sub.socket.disconnect();
    this.subs.clear();
    this.listeners.clear();
  }
}

registerConnector("socketio", (config, http) => new SocketIOConnector(config, http));

// ---------------------------------------------------------------------------------------------
// The hub: one per API root, shared by every feed of the page (one config watch, one
// WebSocket).

const hubs = new Map();

function hubFor(baseUrl, headers) {
  const key = `${new URL(baseUrl, location.href).href} ${JSON.stringify(headers)}`;
  let hub = hubs.get(key);
  if (!hub) {
    hub = new Hub(new Http(baseUrl, headers), () => hubs.delete(key));
    hubs.set(key, hub);
  }
  return hub;
}

class Hub {
  constructor(http, onEmpty) {
    this.http = http;
    this.onEmpty = onEmpty;
    this.config = null;
    this.connector = null;
    this.feeds = new Set();
    this.timer = null;
    this.refreshing = null;
  }

  attach(feed) {
    this.feeds.add(feed);
    if (this.feeds.size === 1) this.refresh();
    else if (this.config) feed.use(this.connector, this.config);
  }

  detach(feed) {
    this.feeds.delete(feed);
    if (this.feeds.size === 0) {
      clearTimeout(this.timer);
      if (this.connector) this.connector.close();
      this.connector = null;
      this.config = null;
      this.onEmpty();
    }
  }

  /** Re-read /ui/config now (single flight); switch transport when it changed. */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this._refresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async _refresh() {
    clearTimeout(this.timer);
    let next;
    try {
      next = await this.http.get("ui/config");
    } catch (error) {
      if (!this.config) for (const feed of this.feeds) feed.configUnavailable(error);
      this._watch(this.config ? this.config.config_refresh_ms : 2000);
      return;
    }
    if (this.feeds.size === 0) return;
    const previous = this.config;
    this.config = next;
    const moved =
      !previous ||
      previous.transport !== next.transport ||
      JSON.stringify(previous.pusher) !== JSON.stringify(next.pusher) ||
      JSON.stringify(previous.socketio) !== JSON.stringify(next.socketio);
    if (moved) this._switch(next);
    // The server names the broadcaster traffic moves to as soon as the one carrying it is
    // disabled or paused, so a change of transport is also a change of broadcaster.
    if (previous && previous.active_broadcaster !== next.active_broadcaster) {
      // After a quota stop or an outage the worker's announcement cannot reach this page (it
      // went to "log", or the provider refused it): say it from here. A feed that heard the
      // announcement already drops this copy (AdminFeed._firstReport).
      const event = {
        type: "provider-changed",
        from: previous.active_broadcaster,
        to: next.active_broadcaster,
        transport: next.transport,
        reason: next.reason,
        ts: Date.now(),
        source: "config",
      };
      for (const feed of this.feeds) feed.providerChanged(event);
    }
    this._watch(next.config_refresh_ms);
  }

  _watch(ms) {
    clearTimeout(this.timer);
    if (this.feeds.size) this.timer = setTimeout(() => this.refresh(), ms);
  }

  _switch(config) {
    const old = this.connector;
    const factory = connectorFactories.get(config.transport);
    this.connector = factory ? factory(config, this.http) : null;
    for (const feed of this.feeds) feed.use(this.connector, config);
    if (old) old.close();
  }

  /** A provider-changed admin event arrived live: re-read the config at once. */
  heardProviderChanged() {
    this.refresh();
  }
}

// ---------------------------------------------------------------------------------------------
// Feeds

class Feed {
  constructor(hub, onState) {
    this.hub = hub;
    this.onStateCb = onState;
    this.connector = null;
    this.config = null;
    this.sub = null;
    this.statusOff = null;
    this.subscribed = false;
    this.closed = false;
    this.transport = null;
    this.state = STATES.CONNECTING;
    this.reason = null;
  }

  setState(transport, state, reason = null) {
    if (transport === this.transport && state === this.state && reason === this.reason) return;
    this.transport = transport;
    this.state = state;
    this.reason = reason;
    if (this.onStateCb) this.onStateCb({ transport, state, reason });
  }

  channel(config) {
    return "";
  }

  /** The hub chose a connector (null: polling) for this config. */
  use(connector, config) {
    this.config = config;
    if (this.sub) this.sub.unsubscribe();
    if (this.statusOff) this.statusOff();
    this.sub = this.statusOff = null;
    this.subscribed = false;
    this.connector = connector;
    if (!connector) {
      this.noLive(config.reason || "live delivery is not available");
      return;
    }
    this.statusOff = connector.onStatus((status) => this.connectorStatus(status));
    this.sub = connector.subscribe(this.channel(config), {
      onEvent: (name, data) => this.event(name, data),
      onSubscribed: () => this.liveAgain(),
      onError: (err) => {
        this.subscribed = false;
        this.noLive(`subscription refused (${(err && err.status) || "error"})`);
      },
    });
    this.started();
  }

  connectorStatus(status) {
    if (status === "connected") return; // wait for the (re)subscription
    this.subscribed = false;
    if (status === "down") this.noLive("the live connection is down");
    else this.dropped();
  }

  configUnavailable(error) {
    this.setState(null, STATES.OFFLINE, error.message);
  }

  providerChanged(_event) {}

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.sub) this.sub.unsubscribe();
    if (this.statusOff) this.statusOff();
    this.hub.detach(this);
  }
}

class LogFeed extends Feed {
  constructor(hub, runId, { onLines, onState }) {
    super(hub, onState);
    this.runId = runId;
    this.onLines = onLines || (() => {});
    this.lastSeq = 0; // every line up to here has been handed to onLines (or is not in the store)
    this.pending = new Map(); // live lines beyond a gap, by seq
    this.inflight = null;
    this.again = false;
    this.gapTimer = null;
    this.fallbackTimer = null;
    this.pollTimer = null;
    this.polling = false;
    this.pollFailures = 0;
    this.wantHistory = false; // a truncated live line: fetch it whole
    this.stats = { live: 0, history: 0, repeats: 0, truncated: 0, gapFills: 0, catchUps: 0, polls: 0 };
  }

  channel(config) {
    return `${config.channel_prefix}logs-${this.runId}`;
  }

  started() {
    // Subscribed first (above); load history now so the page fills while the subscription
    // completes; every subscription_succeeded catches up again.
    if (!this.polling) this.setState(this.connector.name, STATES.CONNECTING);
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = setTimeout(() => {
      this.fallbackTimer = null;
      if (!this.subscribed) this.noLive("no live connection yet");
    }, FIRST_SUBSCRIPTION_MS);
    this.catchUp().catch(() => {});
  }

  liveAgain() {
    this.subscribed = true;
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
    const transport = this.connector.name;
    this.setState(transport, STATES.CATCHING_UP);
    this.catchUp().then(
      () => {
        if (this.subscribed && !this.closed) {
          this.stopPolling();
          this.setState(transport, STATES.LIVE);
        }
      },
      () => {},
    );
  }

  dropped() {
    // The WebSocket closed and pusher-js is reconnecting: not live any more; poll if it
    // does not come back at once.
    if (this.polling) return;
    this.setState(this.connector ? this.connector.name : null, STATES.CONNECTING, "reconnecting");
    if (!this.fallbackTimer) {
      this.fallbackTimer = setTimeout(() => {
        this.fallbackTimer = null;
        if (!this.subscribed) this.noLive("the live connection is down");
      }, FALLBACK_AFTER_MS);
    }
  }

  noLive(reason) {
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
    this.startPolling(reason);
  }

  event(name, data) {
    if (name !== "log" || !data || !Array.isArray(data.events)) return;
    if (data.run_id !== undefined && data.run_id !== this.runId) return;
    this.acceptLive(data.events);
  }

  // Merging -------------------------------------------------------------------------------

  emit(lines) {
    if (lines.length && !this.closed) this.onLines(lines);
  }

  drain(out) {
    while (this.pending.has(this.lastSeq + 1)) {
      const line = this.pending.get(this.lastSeq + 1);
      this.pending.delete(this.lastSeq + 1);
      out.push(line);
      this.lastSeq += 1;
    }
  }

  acceptLive(events) {
    const out = [];
    const sorted = events.length > 1 ? [...events].sort((a, b) => a.seq - b.seq) : events;
    for (const line of sorted) {
      if (line.seq <= this.lastSeq || this.pending.has(line.seq)) {
        this.stats.repeats += 1;
        continue;
      }
      if (line.truncated) {
        // Too large for the provider: the message was cut; history has the whole line.
        this.stats.truncated += 1;
        this.wantHistory = true;
        continue;
      }
      this.stats.live += 1;
      if (line.seq === this.lastSeq + 1) {
        out.push(line);
        this.lastSeq = line.seq;
        this.drain(out);
      } else {
        this.pending.set(line.seq, line);
      }
    }
    this.emit(out);
    this.checkGap();
  }

  checkGap() {
    if (!(this.pending.size || this.wantHistory) || this.gapTimer || this.closed) return;
    // A gap: lines may arrive out of order; if they do not, history has them (every line is
    // stored before it is broadcast).
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (this.pending.size || this.wantHistory) {
        this.wantHistory = false;
        this.stats.gapFills += 1;
        this.catchUp().catch(() => this.checkGap());
      }
    }, GAP_WAIT_MS);
  }

  acceptHistory(events) {
    const out = [];
    for (const line of events) {
      if (line.seq <= this.lastSeq) {
        this.stats.repeats += 1;
        continue;
      }
      if (this.pending.has(line.seq)) {
        this.pending.delete(line.seq);
        this.stats.live -= 1; // counted when it arrived live; history delivers it in order
      }
      this.stats.history += 1;
      out.push(line);
      this.lastSeq = line.seq; // history is the store's truth: a seq it skips does not exist
    }
    for (const seq of [...this.pending.keys()]) if (seq <= this.lastSeq) this.pending.delete(seq);
    this.drain(out);
    this.emit(out);
    this.checkGap();
  }

  /** Load every stored line after lastSeq (single flight; a call during a load runs it again). */
  catchUp() {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = (async () => {
      do {
        this.again = false;
        this.stats.catchUps += 1;
        let limit = this.lastSeq === 0 ? FIRST_HISTORY_PAGE : HISTORY_PAGE;
        for (;;) {
          const page = await this.hub.http.get(`runs/${encodeURIComponent(this.runId)}/logs`, {
            after_seq: this.lastSeq,
            limit,
          });
          if (this.closed) return;
          this.acceptHistory(page.events);
          if (page.events.length < limit) break;
          limit = HISTORY_PAGE;
        }
      } while (this.again && !this.closed);
    })().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  // Polling -------------------------------------------------------------------------------

  startPolling(reason) {
    this.setState("polling", STATES.POLLING, reason);
    if (this.polling) return;
    this.polling = true;
    this.poll();
  }

  stopPolling() {
    this.polling = false;
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  async poll() {
    if (!this.polling || this.closed) return;
    const interval = (this.config && this.config.poll_interval_ms) || 1000;
    let delay = interval;
    try {
      this.stats.polls += 1;
      await this.catchUp();
      this.pollFailures = 0;
      if (this.polling && this.state === STATES.OFFLINE) this.setState("polling", STATES.POLLING);
    } catch (error) {
      this.pollFailures += 1;
      delay = Math.min(MAX_BACKOFF_MS, interval * 2 ** this.pollFailures);
      if (this.polling) {
        const reason = error.status === 401 ? "signed out: open the sign-in link again" : error.message;
        this.setState("polling", STATES.OFFLINE, reason);
      }
    }
    if (this.polling && !this.closed) this.pollTimer = setTimeout(() => this.poll(), delay);
  }

  close() {
    this.stopPolling();
    clearTimeout(this.gapTimer);
    clearTimeout(this.fallbackTimer);
    super.close();
  }
}

/** A feed of events that are not stored (admin and app events): live, or nothing to catch up. */
class EventFeed extends Feed {
  started() {
    this.setState(this.connector.name, STATES.CONNECTING);
  }

  liveAgain() {
    this.subscribed = true;
    this.setState(this.connector.name, STATES.LIVE);
  }

  dropped() {
    this.setState(this.connector ? this.connector.name : null, STATES.CONNECTING, "reconnecting");
  }
}

class AdminFeed extends EventFeed {
  constructor(hub, onEvent, onState) {
    super(hub, onState);
    this.onEvent = onEvent;
    this.lastMove = null; // "from>to" of the last provider change delivered, and when
    this.lastMoveAt = 0;
  }

  channel(config) {
    return `${config.channel_prefix}admin-events`;
  }

  noLive(reason) {
    // No live admin events: pages re-fetch what they show (runs, status) on the poll interval.
    this.setState("polling", STATES.POLLING, reason);
  }

  event(name, data) {
    const event = { ...(data && typeof data === "object" ? data : { data }), event: name };
    if (!event.type) event.type = name;
    if (event.type === "provider-changed") {
      this.hub.heardProviderChanged();
      if (!this._firstReport(event)) return;
    }
    if (!this.closed) this.onEvent(event);
  }

  providerChanged(event) {
    if (!this.closed && this._firstReport(event)) this.onEvent({ ...event, event: "provider-changed" });
  }

  /** One change, one event: the workers' announcement and this page's reading of
   * /ui/config can both report the same move (whichever comes first is delivered). */
  _firstReport(event) {
    const move = `${event.from}>${event.to}`;
    const now = Date.now();
    if (move === this.lastMove && now - this.lastMoveAt < 30000) return false;
    this.lastMove = move;
    this.lastMoveAt = now;
    return true;
  }
}

/** An application channel ({prefix}{name}): each event handed to its listeners, as sent. */
class AppFeed extends EventFeed {
  constructor(hub, name, onState) {
    super(hub, onState);
    this.name = name;
    this.listeners = new Map(); // event name -> Set of callbacks
  }

  channel(config) {
    return `${config.channel_prefix}${this.name}`;
  }

  noLive(reason) {
    this.setState(null, STATES.OFFLINE, `${reason}: app events are not stored, so they cannot be polled`);
  }

  event(name, data) {
    for (const callback of [...(this.listeners.get(name) || [])]) if (!this.closed) callback(data);
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Follow run `runId`'s lines. `onLines(lines)` gets new lines ({seq, ts, level, message,
 * data}) each exactly once, in increasing seq order; `onState({transport, state, reason})`
 * reports how they arrive. Options: `baseUrl` (the API root; default: where this module is
 * served from), `headers` (e.g. {Authorization: "Bearer …"} for a page without the session
 * cookie). Returns {close(), refresh(), stats, state(), lastSeq()}.
 */
export function connectLogs(runId, { onLines, onState, baseUrl = DEFAULT_BASE, headers = {} } = {}) {
  const hub = hubFor(baseUrl, headers);
  const feed = new LogFeed(hub, String(runId), { onLines, onState });
  hub.attach(feed);
  return {
    close: () => feed.close(),
    /** Catch up from history now (e.g. when the run ended: its last message may be late). */
    refresh: () => feed.catchUp().catch(() => {}),
    stats: feed.stats,
    state: () => ({ transport: feed.transport, state: feed.state, reason: feed.reason }),
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
  const hub = hubFor(baseUrl, headers);
  const feed = new AdminFeed(hub, onEvent, onState);
  hub.attach(feed);
  return {
    close: () => feed.close(),
    state: () => ({ transport: feed.transport, state: feed.state, reason: feed.reason }),
    config: () => hub.config,
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
  const hub = hubFor(baseUrl, headers);
  const feed = new AppFeed(hub, String(name), onState);
  hub.attach(feed);
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
    state: () => ({ transport: feed.transport, state: feed.state, reason: feed.reason }),
  };
  return subscription;
}

/** A client bound to one API root: `connect({baseUrl, headers}).channel(name).listen(...)`. */
export function connect(options = {}) {
  return { channel: (name, more = {}) => channel(name, { ...options, ...more }) };
}
