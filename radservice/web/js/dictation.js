// One live dictation's link to the service: nothing recorded is lost when the network drops.
// No DOM here (the page gives it a way to open sockets and a clock): tested under Node
// (tests/js/dictation.test.mjs) with fake sockets and a fake clock.
//
// The whole recording stays in memory until the final text has come. Each chunk goes out with
// its byte offset (framing=offset): before the service says `started`, chunks wait; after a
// drop, the link reconnects with backoff, resumes the same dictation, and sends again from the
// byte the service says it holds (`received`), so the service's file is the recording, every
// byte once. After `maxOfflineMs` without the service, it stops trying and the recording is
// offered as a file to upload.

/** Close codes after which trying again cannot help (the page says why). */
const FINAL_CODES = new Map([
  [4401, "your session has ended: sign in again"],
  [4403, "you may not dictate on this study"],
  [4404, "the study or dictation no longer exists"],
  [4422, "the service refused the request"],
  [1003, "the service could not read the audio"],
  [1009, "the dictation is over the size or length limit"],
]);

// States: connecting, recording, reconnecting, stopping, offline, done, failed.

/** The 8-byte big-endian offset followed by the chunk: one binary message. */
export function frame(offset, bytes) {
  const out = new Uint8Array(8 + bytes.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(offset));
  out.set(bytes, 8);
  return out;
}

export class DictationLink {
  /**
   * @param {object} options
   * @param {(params: {dictationId: string|null}) => object} options.open a new WebSocket-like
   *   object (send, close, onopen, onmessage, onclose) for a new dictation or a resume
   * @param {Function} [options.onChange] called with (state, detail) whenever the state changes
   * @param {Function} [options.onPartial] called with ({committed, text}) while speaking
   * @param {Function} [options.onFinal] called with the `final` event
   * @param {number} [options.maxOfflineMs] give up reconnecting after this long (then offer upload)
   */
  constructor({ open, onChange = () => {}, onPartial = () => {}, onFinal = () => {}, maxOfflineMs = 120000,
    initialDelayMs = 250, maxDelayMs = 5000, connectTimeoutMs = 10000, stallMs = 10000,
    now = () => Date.now(),
    // (wrapped: a browser's setTimeout called as this.setTimer, with `this` the link, throws)
    setTimer = (fn, ms) => setTimeout(fn, ms), clearTimer = (id) => clearTimeout(id),
    random = () => Math.random() } = {}) {
    Object.assign(this, { open, onChange, onPartial, onFinal, maxOfflineMs, initialDelayMs, maxDelayMs,
      connectTimeoutMs, stallMs, now, setTimer, clearTimer, random });
    this.chunks = []; // the whole recording, as recorded
    this.recorded = 0; // its bytes
    this.sent = 0; // the offset up to which this socket has been given the recording
    this.dictationId = null;
    this.socket = null;
    this.state = "connecting";
    this.reason = "";
    this.attempts = 0;
    this.offlineSince = null;
    this.timer = null;
    this.stopWanted = false;
    this.resetPending = false; // a scratched take the service has not confirmed dropping
    this.watchdog = null;
    this.connect();
    this.watch();
  }

  /** A chunk of recorded audio (MediaRecorder's data): kept, and sent when the service can take it. */
  push(bytes) {
    if (!bytes || !bytes.length || ["done", "failed"].includes(this.state)) return;
    this.chunks.push(bytes);
    this.recorded += bytes.length;
    this.flush();
  }

  /** The radiologist pressed Stop (after the recorder's last chunk was pushed). */
  stop() {
    this.stopWanted = true;
    if (this.state === "recording") {
      this.flush();
      this.socket.send("stop");
      this.set("stopping");
    }
    // reconnecting or connecting: "stop" follows once the service holds every byte
  }

  /** Scratch the whole take: the service empties the recording; the page starts a new recorder.
   * Until the service confirms it, the reset is sent again on every new connection, before any
   * byte of the new take (a reset lost in a drop would splice two takes in one file). */
  reset() {
    if (["stopping", "done", "failed"].includes(this.state) || this.stopWanted) return false;
    this.resetPending = true;
    this.chunks = [];
    this.recorded = 0;
    this.sent = 0;
    if (this.state === "recording") this.socket.send("reset");
    return true;
  }

  /** The recording so far as one byte array (to upload as a file when the service was away too long). */
  recording() {
    const all = new Uint8Array(this.recorded);
    let at = 0;
    for (const chunk of this.chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return all;
  }

  /** Give up on the link (the page is leaving, or the recording was uploaded instead). */
  close() {
    this.clearTimer(this.timer);
    this.clearTimer(this.watchdog);
    this.detach();
    if (!["done", "failed"].includes(this.state)) this.set("failed", "closed by the page");
  }

  // ---- inside

  set(state, reason = "") {
    if (["done", "failed"].includes(state)) this.clearTimer(this.watchdog);
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    this.onChange(state, reason);
  }

  connect() {
    this.detach();
    const socket = this.open({ dictationId: this.dictationId });
    this.socket = socket;
    this.connectedAt = this.now();
    this.startedAt = null;
    this.stalledSince = null;
    socket.onmessage = (event) => { if (this.socket === socket) this.message(event.data); };
    socket.onclose = (event) => { if (this.socket === socket) this.closed(event.code, event.reason || ""); };
    socket.onerror = () => {}; // a close follows
  }

  detach() {
    if (!this.socket) return;
    const old = this.socket;
    this.socket = null;
    old.onmessage = null;
    old.onclose = null;
    try { old.close(); } catch { /* already closed */ }
  }

  message(data) {
    let event;
    try { event = JSON.parse(data); } catch { return; }
    if (event.type === "started") {
      this.dictationId = event.dictation_id;
      this.startedAt = this.now();
      const received = Number(event.received) || 0;
      if (this.resetPending) {
        this.socket.send("reset"); // the service may still hold the scratched take
        this.sent = 0;
      } else if (received > this.recorded) {
        this.detach();
        this.set("failed", "the service holds more of this recording than the page has: start a new dictation");
        return;
      } else {
        this.sent = received;
      }
      this.set("recording");
      this.flush();
      if (this.stopWanted) this.stop();
    } else if (event.type === "reset") {
      this.resetPending = false;
    } else if (event.type === "partial") {
      this.onPartial({ committed: event.committed || "", text: event.text || "" });
    } else if (event.type === "final") {
      this.clearTimer(this.timer);
      this.set("done", event.error ? "failed" : ""); // the link's work is over; a failed job says why in the event
      this.onFinal(event);
      this.detach();
    }
  }

  /** Send what the service does not have yet, chunk by chunk, each with its offset. */
  flush() {
    if (this.state !== "recording" || !this.socket) return;
    let at = 0;
    for (const chunk of this.chunks) {
      const end = at + chunk.length;
      if (end > this.sent) {
        const from = Math.max(this.sent, at);
        this.socket.send(frame(from, chunk.subarray(from - at)));
        this.sent = end;
      }
      at = end;
    }
  }

  /** Once a second: a connection that never says `started`, or that takes no data for
   * `stallMs` (a network gone without a close: the browser may not notice for minutes), is
   * dropped and tried again; a connection that has carried the recording for 5 s counts as good
   * (the backoff and the offline clock start again). */
  watch() {
    this.watchdog = this.setTimer(() => {
      this.watchdog = null;
      if (["done", "failed"].includes(this.state)) return;
      const socket = this.socket;
      const now = this.now();
      if (socket && this.startedAt === null && now - this.connectedAt >= this.connectTimeoutMs) {
        this.detach();
        this.closed(4000, "no answer from the service");
      } else if (socket && this.startedAt !== null) {
        if ((socket.bufferedAmount || 0) > 0) {
          if (this.stalledSince === null) this.stalledSince = now;
          else if (now - this.stalledSince >= this.stallMs) {
            this.detach();
            this.closed(4000, "the connection stopped taking audio");
          }
        } else {
          this.stalledSince = null;
          if (now - this.startedAt >= 5000) {
            this.attempts = 0;
            this.offlineSince = null;
          }
        }
      }
      this.watch();
    }, 1000);
  }

  closed(code, reason) {
    if (["done", "failed"].includes(this.state)) return;
    if (FINAL_CODES.has(code)) {
      this.detach();
      this.set("failed", `${FINAL_CODES.get(code)}${reason ? ` (${reason})` : ""}`);
      return;
    }
    if (this.stopWanted && code === 4409 && /\bis (finalizing|transcrib|failed)/.test(reason)) {
      // "stop" reached the service before the drop: the final text comes from its job
      this.socket = null;
      this.set("done", "pending");
      this.onFinal({ type: "final", text: null, pending: true, dictation_id: this.dictationId });
      return;
    }
    // dropped, timed out (4408), or the service has not noticed the drop yet (4409): try again
    this.socket = null;
    if (this.offlineSince === null) this.offlineSince = this.now();
    if (this.now() - this.offlineSince >= this.maxOfflineMs) {
      this.set("offline", "the service could not be reached; the recording is kept");
      return;
    }
    this.set("reconnecting", reason);
    const delay = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** this.attempts) * (0.75 + this.random() / 2);
    this.attempts += 1;
    this.clearTimer(this.timer);
    this.timer = this.setTimer(() => {
      this.timer = null;
      if (this.state === "reconnecting") this.connect();
    }, delay);
  }
}
