/**
 * The run view's log (LogView): the virtualised list of a run's lines, with level filter,
 * text search, follow-tail and selection.
 *
 * Large runs: the view renders only the rows in sight. Every row has the same height
 * (--row-h), so a spacer as tall as all (filtered) rows gives the scrollbar its range and
 * the visible slice is computed from scrollTop: a 100,000-line run keeps about 60 rows in
 * the DOM, and scrolling costs the same at any size. Lines land in memory as they arrive
 * (history pages of 10,000, live messages); DOM work happens at most once per animation
 * frame, so 1,000 lines/s cost one small render per frame, not one per line. Long lines are
 * cut at the row's width; a click selects a line (onSelect shows it whole).
 *
 * Log text is always set with textContent (search highlights are text nodes and <mark>
 * elements made with the DOM API): a line holding HTML shows its characters.
 */

import { clock } from "./format.js";

/** The levels relaycast stores (workflows.cleaning.LEVELS); anything else shows as info. */
const LEVELS = ["debug", "info", "warning", "error", "critical"];
const OVERSCAN = 12;

// Formatting -------------------------------------------------------------------------------

function dataText(data) {
  if (!data || typeof data !== "object") return data === undefined || data === null ? "" : String(data);
  const parts = [];
  for (const [key, value] of Object.entries(data)) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    parts.push(`${key}=${text && text.length > 200 ? `${text.slice(0, 200)}…` : text}`);
  }
  return parts.join("  ");
}

/** Fill `el` with `text`, marking each case-insensitive occurrence of `needle` (DOM nodes only). */
function setText(el, text, needle) {
  if (!needle) {
    el.textContent = text;
    return;
  }
  const lower = text.toLowerCase();
  let at = lower.indexOf(needle);
  if (at < 0) {
    el.textContent = text;
    return;
  }
  el.textContent = "";
  let from = 0;
  while (at >= 0) {
    if (at > from) el.appendChild(document.createTextNode(text.slice(from, at)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(at, at + needle.length);
    el.appendChild(mark);
    from = at + needle.length;
    at = lower.indexOf(needle, from);
  }
  if (from < text.length) el.appendChild(document.createTextNode(text.slice(from)));
}

// The virtualised log ------------------------------------------------------------------------

export class LogView {
  constructor(container) {
    this.el = container;
    this.spacer = container.querySelector(".spacer-y");
    this.rowsEl = container.querySelector(".rows");
    this.placeholder = container.querySelector(".placeholder");
    this.rowH = parseFloat(getComputedStyle(container).getPropertyValue("--row-h")) || 22;
    this.lines = []; // every line held, in seq order
    this.levels = new Set(LEVELS);
    this.needle = "";
    this.view = null; // indices into lines when a filter is on, else null (all)
    this.counts = Object.fromEntries(LEVELS.map((l) => [l, 0]));
    this.follow = true;
    this.unseen = 0;
    this.selected = null;
    this.frame = 0;
    this.renders = 0;
    this.pool = [];
    this.lastShownTop = -1;
    this.onChange = () => {};
    this.onSelect = () => {}; // the line selected (null: none), to show whole

    container.addEventListener("scroll", () => this.scrolled(), { passive: true });
    container.addEventListener("wheel", (e) => {
      if (e.deltaY < 0) this.setFollow(false);
    }, { passive: true });
    container.addEventListener("keydown", (e) => {
      if (["ArrowUp", "PageUp", "Home"].includes(e.key)) this.setFollow(false);
    });
    container.addEventListener("click", (e) => {
      const row = e.target.closest(".line");
      if (row) this.select(Number(row.dataset.seq));
    });
    new ResizeObserver(() => this.schedule()).observe(container);
  }

  // Data ----------------------------------------------------------------------------------

  matches(line) {
    if (!this.levels.has(line.level)) return false;
    if (!this.needle) return true;
    if (line._hay === undefined) {
      line._hay = `${line.message}\u0000${dataText(line.data)}`.toLowerCase();
    }
    return line._hay.includes(this.needle);
  }

  filtering() {
    return this.needle !== "" || this.levels.size !== LEVELS.length;
  }

  append(lines) {
    for (const line of lines) {
      if (!(line.level in this.counts)) line.level = "info";
      this.lines.push(line);
      this.counts[line.level] += 1;
      if (this.view && this.matches(line)) this.view.push(this.lines.length - 1);
    }
    if (!this.follow) this.unseen += lines.length;
    this.schedule();
  }

  refilter() {
    if (!this.filtering()) {
      this.view = null;
    } else {
      const view = [];
      for (let i = 0; i < this.lines.length; i++) if (this.matches(this.lines[i])) view.push(i);
      this.view = view;
    }
    this.pool.forEach((row) => (row._seq = -1));
    this.schedule();
  }

  get size() {
    return this.view ? this.view.length : this.lines.length;
  }

  at(index) {
    return this.lines[this.view ? this.view[index] : index];
  }

  seqs() {
    return this.lines.map((l) => l.seq);
  }

  // Follow-tail ---------------------------------------------------------------------------

  setFollow(on) {
    if (on === this.follow) return;
    this.follow = on;
    if (on) {
      this.unseen = 0;
      this.el.scrollTop = this.el.scrollHeight;
    }
    this.schedule();
  }

  scrolled() {
    const el = this.el;
    const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - this.rowH / 2;
    if (atBottom && !this.follow) this.setFollow(true);
    else if (!atBottom && this.follow && el.scrollTop < this.lastShownTop) this.setFollow(false);
    this.schedule();
  }

  // Rendering -----------------------------------------------------------------------------

  schedule() {
    if (this.frame) return;
    if (document.hidden) {
      this.frame = setTimeout(() => {
        this.frame = 0;
        this.render();
      }, 250);
    } else {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  row() {
    const row = document.createElement("div");
    row.className = "line";
    for (const cls of ["seq", "ts", "lvl", "msg", "data"]) {
      const span = document.createElement("span");
      span.className = cls;
      row.appendChild(span);
    }
    row._seq = -1;
    return row;
  }

  fill(row, line) {
    const [seq, ts, lvl, msg, data] = row.children;
    row._seq = line.seq;
    row.dataset.seq = line.seq;
    row.dataset.level = line.level;
    row.classList.toggle("selected", line.seq === this.selected);
    seq.textContent = line.seq;
    ts.textContent = clock(line.ts);
    lvl.textContent = line.level;
    setText(msg, line.message, this.needle);
    msg.title = line.message.length > 80 ? line.message.slice(0, 2000) : "";
    setText(data, dataText(line.data), this.needle);
  }

  render() {
    if (this.frame) {
      cancelAnimationFrame(this.frame);
      clearTimeout(this.frame);
      this.frame = 0;
    }
    this.renders += 1;
    const el = this.el;
    const n = this.size;
    this.spacer.style.height = `${n * this.rowH}px`;
    if (this.follow) el.scrollTop = el.scrollHeight;
    const top = el.scrollTop;
    this.lastShownTop = top;
    const height = el.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / this.rowH) + OVERSCAN);
    this.rowsEl.style.transform = `translateY(${first * this.rowH}px)`;
    const want = Math.max(0, last - first);
    while (this.pool.length < want) this.pool.push(this.rowsEl.appendChild(this.row()));
    while (this.pool.length > want) this.pool.pop().remove();
    for (let i = 0; i < want; i++) {
      const line = this.at(first + i);
      const row = this.pool[i];
      if (row._seq !== line.seq) this.fill(row, line);
    }
    this.placeholder.hidden = n > 0;
    if (n === 0) this.placeholder.textContent = this.lines.length ? "No line matches the filter." : "Waiting for lines…";
    const lastLine = this.lines[this.lines.length - 1];
    el.dataset.lineCount = String(this.lines.length);
    el.dataset.lastSeq = String(lastLine ? lastLine.seq : 0);
    this.onChange(this);
  }

  rendered() {
    return this.pool.map((row) => Number(row.dataset.seq));
  }

  // Selection -----------------------------------------------------------------------------

  select(seq) {
    this.selected = seq;
    const line = this.lines.find((l) => l.seq === seq);
    this.onSelect(line || null);
    if (line) this.pool.forEach((row) => row.classList.toggle("selected", row._seq === seq));
  }

  unselect() {
    this.selected = null;
    this.onSelect(null);
    this.pool.forEach((row) => row.classList.remove("selected"));
  }
}
