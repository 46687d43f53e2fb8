/**
 * What connectors share (after Laravel Echo's): the registry of factories by transport name,
 * the base class (name, status, status listeners) and the loader of vendored browser builds.
 * A connector is made by a factory registered with registerConnector(name, (config, http) =>
 * connector); the interface is described in relaycast.js.
 */

const connectorFactories = new Map();

/** Make `name` (a value of /ui/config's `transport`) a live transport. */
export function registerConnector(name, factory) {
  connectorFactories.set(name, factory);
}

/** A connector for `config.transport`, or null when none is registered (polling). */
export function connectorFor(config, http) {
  const factory = connectorFactories.get(config.transport);
  return factory ? factory(config, http) : null;
}

const scripts = new Map();

/** Load a vendored browser build once; resolve with the global it defines (window[name]). */
export function loadScript(url, name) {
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

/** What every connector shares: its name, its status, and who listens to the status. */
export class Connector {
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
