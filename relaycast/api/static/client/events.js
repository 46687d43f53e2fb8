/** Feeds of events that are not stored: admin events (connectAdminEvents) and app channels (channel). */

import { Feed, STATES } from "./feed.js";

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

export class AdminFeed extends EventFeed {
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
export class AppFeed extends EventFeed {
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
