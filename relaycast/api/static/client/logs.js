/**
 * A run's lines (connectLogs): subscribed first, then loaded from history, merged by seq with
 * repeats dropped, gaps and truncated lines filled from history, caught up after every
 * (re)subscription, and polled from history whenever live delivery is not possible.
 */

import { Feed, STATES } from "./feed.js";

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

export class LogFeed extends Feed {
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
