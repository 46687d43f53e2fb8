/**
 * Feeds: one per connectLogs / connectAdminEvents / channel call. A feed is attached to its
 * API root's hub, which hands it a connector (null: polling) whenever /ui/config names a
 * transport; the feed subscribes its channel, follows the connector's status and reports its
 * own state (STATES) through onState. Subclasses say what their channel is and what to do
 * when live delivery starts, drops or is not possible (started, liveAgain, dropped, noLive).
 */

/** Values of onState's `state` (and of #connection[data-state] in the pages). */
export const STATES = Object.freeze({
  CONNECTING: "connecting", // no line source yet, or the live connection dropped a moment ago
  LIVE: "live", // subscribed and caught up: lines arrive as they are broadcast
  CATCHING_UP: "catching-up", // (re)subscribed, loading what was missed from history
  POLLING: "polling", // no live delivery: polling the history endpoint
  OFFLINE: "offline", // neither live delivery nor the API can be reached
});

export class Feed {
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

  /** The state last reported: {transport, state, reason}. */
  report() {
    return { transport: this.transport, state: this.state, reason: this.reason };
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
