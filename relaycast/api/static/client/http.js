/** HTTP to the API: JSON GETs with the page's headers, and the URLs of the client's files. */

/** The static root (<root>/ui/static/): relaycast.js and vendor/ are served there. */
const STATIC_ROOT = new URL("../", import.meta.url);
/** The API root: the static files are served at <root>/ui/static/. */
export const DEFAULT_BASE = new URL("../../", STATIC_ROOT);

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Http {
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

  /** URL of a file served beside relaycast.js (e.g. "vendor/pusher.min.js"). */
  asset(path) {
    return new URL(path, STATIC_ROOT);
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
