/** The "pusher" connector (registered by relaycast.js): pusher-js, vendor/pusher.min.js, loaded on
 * first use; WebSockets only. */

import { Connector, loadScript } from "./connector.js";

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

export class PusherConnector extends Connector {
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
