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
 * "polling" needs no connector; "pusher" (client/pusher.js) and "socketio" (client/socketio.js)
 * are registered below.
 *
 * Application events (Python: `relaycast.broadcast("orders", "shipped", data)`) arrive through
 * `channel(name).listen(event, cb)`, Laravel Echo's shape, over the same connector. They are
 * stored nowhere, so with no live transport ("polling") they cannot be delivered: the
 * channel's state is then "offline" with that reason.
 *
 * This module is the public surface: import from it, not from client/ (the layout may change).
 *   client/http.js       HTTP to the API (getJson, HttpError, the default API root)
 *   client/connector.js  the connector registry, base class and vendored-script loader
 *   client/pusher.js, client/socketio.js   the connectors
 *   client/hub.js        one hub per API root: /ui/config watch, one connector for all feeds
 *   client/feed.js       the feed base class and STATES
 *   client/logs.js       a run's lines (history, merging by seq, gap fill, polling)
 *   client/events.js     admin events and app channels (not stored: live or nothing)
 *   client/connect.js    connectLogs, connectAdminEvents, channel, connect
 */

import { registerConnector } from "./client/connector.js";
import { PusherConnector } from "./client/pusher.js";
import { SocketIOConnector } from "./client/socketio.js";

export { channel, connect, connectAdminEvents, connectLogs } from "./client/connect.js";
export { registerConnector } from "./client/connector.js";
export { STATES } from "./client/feed.js";
export { getJson, HttpError } from "./client/http.js";

registerConnector("pusher", (config, http) => new PusherConnector(config, http));
registerConnector("socketio", (config, http) => new SocketIOConnector(config, http));
