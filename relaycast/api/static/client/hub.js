/**
 * The hub: one per API root, shared by every feed of the page (one config watch, one
 * WebSocket). It reads /ui/config, makes the connector the server names (none: polling),
 * hands it to its feeds, and tells them when the broadcaster carrying traffic changed.
 */

import { connectorFor } from "./connector.js";
import { Http } from "./http.js";

const hubs = new Map();

/** The hub of `baseUrl` with these headers (made on first use; forgotten when its last feed closes). */
export function hubFor(baseUrl, headers) {
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
    this.connector = connectorFor(config, this.http);
    for (const feed of this.feeds) feed.use(this.connector, config);
    if (old) old.close();
  }

  /** A provider-changed admin event arrived live: re-read the config at once. */
  heardProviderChanged() {
    this.refresh();
  }
}
