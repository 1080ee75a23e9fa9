// The page's only way to the data: the HTTP API, with the session cookie (same origin).
// No DOM here: tested under Node (tests/js/api.test.mjs) with a fake fetch.

/** An answer that is not 2xx, or no answer at all (status 0: the service could not be reached). */
export class ApiError extends Error {
  constructor(status, detail, body = null, retryAfter = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.body = body;
    this.retryAfter = retryAfter;
  }

  get offline() { return this.status === 0; }
  get conflict() { return this.status === 409; }
  get signedOut() { return this.status === 401; }
}

/** The words of an error body: FastAPI's {"detail": "..."} or {"detail": [{msg, loc}, ...]}. */
export function detailOf(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail) && body.detail.length) {
    return body.detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return `the service answered ${status}`;
}

export class Api {
  /**
   * @param {object} options
   * @param {Function} [options.fetch] the fetch to use (a fake in tests)
   * @param {string} [options.base] the service's origin ("" = this page's)
   * @param {Function} [options.onSignedOut] called once for each 401 (the page shows sign-in)
   */
  constructor({ fetch: fetchImpl = globalThis.fetch.bind(globalThis), base = "", onSignedOut = () => {} } = {}) {
    this.fetch = fetchImpl;
    this.base = base;
    this.onSignedOut = onSignedOut;
    /** The user the page shows: sent with every request, so that a cookie that has since become
     * another person's (signed in in another tab) is refused, never acted on as that person. */
    this.user = null;
  }

  /**
   * @param {object} [options]
   * @param {boolean} [options.background] the page's own polling, not the person: the session's
   *   idle clock does not restart for it
   */
  async request(method, path, body = undefined, { background = false, accept = "application/json" } = {}) {
    const init = { method, credentials: "same-origin", headers: { Accept: accept } };
    if (background) init.headers["X-Radservice-Background"] = "1";
    if (this.user !== null) init.headers["X-Radservice-User"] = encodeURIComponent(this.user);
    if (body instanceof FormData) {
      init.body = body; // multipart: the browser writes its Content-Type with the boundary
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(this.base + path, init);
    } catch (cause) {
      throw new ApiError(0, "the service cannot be reached (connection lost)", null);
    }
    if (response.status === 204) return null;
    if (response.ok && accept !== "application/json") return response.blob();
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!response.ok) {
      const retry = response.headers && response.headers.get ? response.headers.get("Retry-After") : null;
      const error = new ApiError(response.status, detailOf(data, response.status), data,
        retry === null ? null : Number(retry));
      if (response.status === 401 && path !== "/api/v1/session") this.onSignedOut(error);
      throw error;
    }
    return data;
  }

  signIn(username, password) { return this.request("POST", "/api/v1/session", { username, password }); }
  signOut() { return this.request("DELETE", "/api/v1/session"); }
  me() { return this.request("GET", "/api/v1/me"); }

  worklist(filters = {}, options = {}) {
    return this.request("GET", `/api/v1/worklist${queryOf(filters)}`, undefined, options);
  }

  /** @param {string|null} [issuer] the accession's issuer ("" is an issuer too: the study without one) */
  study(accession, issuer = null) {
    return this.request("GET", `/api/v1/studies/${encodeURIComponent(accession)}${issuerQuery(issuer)}`);
  }
  draftReport(accession, issuer = null) {
    return this.request("POST", `/api/v1/studies/${encodeURIComponent(accession)}/report${issuerQuery(issuer)}`);
  }

  /** A recording as a file (the live link was offline too long): a new dictation, transcribed by a worker. */
  uploadDictation(accession, issuer, section, bytes, type = "audio/webm") {
    const form = new FormData();
    form.append("section", section);
    form.append("audio", new Blob([bytes], { type }), `dictation.${type.includes("ogg") ? "ogg" : "webm"}`);
    return this.request("POST", `/api/v1/studies/${encodeURIComponent(accession)}/dictations${issuerQuery(issuer)}`,
      form);
  }

  /** The live dictation socket's address (the page's cookie goes with it; the service checks Origin). */
  streamUrl(location, { accession, issuer, section, dictationId = null }) {
    const params = new URLSearchParams({ section, issuer: issuer ?? "", framing: "offset" });
    if (this.user !== null) params.set("user", this.user);
    if (dictationId) params.set("dictation_id", dictationId);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/api/v1/studies/${encodeURIComponent(accession)}/dictations/stream?${params}`;
  }

  /** A stretch of a dictation's audio (s) as a WAV blob, to play a word or a sentence back. */
  audio(dictationId, start, end) {
    const times = queryOf({ start: start.toFixed(2), end: end.toFixed(2) });
    return this.request("GET", `/api/v1/dictations/${encodeURIComponent(dictationId)}/audio${times}`, undefined,
      { accept: "audio/wav" });
  }

  transcribe(dictationId) {
    return this.request("POST", `/api/v1/dictations/${encodeURIComponent(dictationId)}/transcribe`);
  }

  report(id) { return this.request("GET", `/api/v1/reports/${id}`); }
  edit(id, sections, revision) { return this.request("PATCH", `/api/v1/reports/${id}`, { sections, revision }); }
  sign(id, status, revision) { return this.request("POST", `/api/v1/reports/${id}/sign`, { status, revision }); }
  addendum(id, text) { return this.request("POST", `/api/v1/reports/${id}/addenda`, { text }); }
  deliveries(id, options = {}) {
    return this.request("GET", `/api/v1/reports/${id}/deliveries`, undefined, options);
  }
  suggestImpression(id) { return this.request("POST", `/api/v1/reports/${id}/suggest-impression`); }
}

/** "?issuer=..." naming the study exactly, or "" (the service answers 409 if the number is not unique). */
export function issuerQuery(issuer) {
  return issuer === null || issuer === undefined ? "" : `?issuer=${encodeURIComponent(issuer)}`;
}

/** "?a=1&b=x" from an object; empty values are left out; arrays become comma lists. */
export function queryOf(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    search.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
