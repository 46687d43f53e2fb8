/** The "socketio" connector (registered by relaycast.js): socket.io-client, vendor/socket.io.min.js,
 * loaded on first use. */

import { Connector, loadScript } from "./connector.js";

/**
 * Socket.IO (relaycast socketio): one socket per subscribed channel, so that every event a
 * socket receives belongs to its channel (Socket.IO events carry no channel name). A socket
 * asks for its channel with a `subscribe` event and the server's ack; after every reconnect
 * it asks again, and onSubscribed makes the feed catch up from history. The session cookie
 * (same site) or a bearer token from `headers` authorises it.
 */
export class SocketIOConnector extends Connector {
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
    const down = () => {
      sub.status = "down";
      this._update();
    };
    socket.on("disconnect", down);
    socket.on("connect_error", down);
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
