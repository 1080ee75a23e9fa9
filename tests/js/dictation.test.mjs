// The live dictation link's buffer / reconnect / resume state machine, with fake sockets and a fake clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DictationLink, frame } from "../../radservice/web/js/dictation.js";

/** A socket the test drives: what the page sent, and the service's side of it. */
class FakeSocket {
  constructor(params) {
    this.params = params;
    this.sent = [];
    this.closedByPage = false;
  }

  send(data) { this.sent.push(data); }
  close() { this.closedByPage = true; }
  started(dictationId, received = 0) {
    this.onmessage?.({ data: JSON.stringify({ type: "started", dictation_id: dictationId, received }) });
  }
  say(event) { this.onmessage?.({ data: JSON.stringify(event) }); }
  drop(code = 1006, reason = "") { this.onclose?.({ code, reason }); }
  /** The audio this socket carried: [offset, bytes] per binary message. */
  audio() {
    return this.sent.filter((m) => typeof m !== "string").map((m) => {
      const offset = Number(new DataView(m.buffer, m.byteOffset).getBigUint64(0));
      return [offset, [...m.subarray(8)]];
    });
  }
}

/** A link with fake sockets and a clock the test moves. */
function rig(options = {}) {
  const sockets = [];
  const timers = [];
  let clock = 0;
  const states = [];
  const finals = [];
  const partials = [];
  const link = new DictationLink({
    open: (params) => {
      const socket = new FakeSocket(params);
      sockets.push(socket);
      return socket;
    },
    onChange: (state, reason) => states.push(reason ? `${state}: ${reason}` : state),
    onFinal: (event) => finals.push(event),
    onPartial: (event) => partials.push(event),
    now: () => clock,
    setTimer: (fn, ms) => { timers.push({ at: clock + ms, fn }); return timers.length; },
    clearTimer: () => {},
    random: () => 0.5,
    ...options,
  });
  const advance = (ms) => {
    clock += ms;
    for (const timer of timers.splice(0).sort((a, b) => a.at - b.at)) {
      if (timer.at <= clock) timer.fn();
      else timers.push(timer);
    }
  };
  return { link, sockets, states, finals, partials, advance, last: () => sockets[sockets.length - 1] };
}

const bytes = (...values) => new Uint8Array(values);

/** Everything the service received, in order of arrival, applied like the server does (offset checked). */
function served(sockets) {
  const file = [];
  for (const socket of sockets) {
    for (const [offset, data] of socket.audio()) {
      assert.equal(offset, file.length, "a gap or a repeat reached the service");
      file.push(...data);
    }
  }
  return file;
}

test("a frame is the 8-byte big-endian offset then the bytes", () => {
  assert.deepEqual([...frame(258, bytes(7, 8))], [0, 0, 0, 0, 0, 0, 1, 2, 7, 8]);
});

test("audio recorded before `started` is buffered, not dropped, then sent in order", () => {
  const { link, sockets, states } = rig();
  link.push(bytes(1, 2, 3));
  link.push(bytes(4));
  assert.deepEqual(sockets[0].sent, []);
  sockets[0].started("d-1");
  link.push(bytes(5, 6));
  assert.deepEqual(sockets[0].audio(), [[0, [1, 2, 3]], [3, [4]], [4, [5, 6]]]);
  assert.deepEqual(served(sockets), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(states, ["recording"]);
  assert.equal(sockets[0].params.dictationId, null);
});

test("a drop: recording goes on, the link resumes the same dictation and sends from what the service holds", () => {
  const { link, sockets, states, advance } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2, 3, 4));
  sockets[0].drop();
  link.push(bytes(5, 6)); // spoken during the outage
  assert.equal(link.state, "reconnecting");
  advance(250);
  assert.equal(sockets.length, 2);
  assert.deepEqual(sockets[1].params, { dictationId: "d-1" });
  sockets[1].started("d-1", 2); // only 2 bytes reached the service before the cut
  link.push(bytes(7));
  assert.deepEqual(sockets[1].audio(), [[2, [3, 4]], [4, [5, 6]], [6, [7]]]);
  const file = [...bytes(1, 2), ...sockets[1].audio().flatMap(([, data]) => data)];
  assert.deepEqual(file, [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(states, ["recording", "reconnecting", "recording"]);
});

test("a reconnect during a reconnect backs off and still ends with every byte once", () => {
  const { link, sockets, advance } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2));
  sockets[0].drop();
  advance(250);
  assert.equal(sockets.length, 2);
  sockets[1].drop(); // the resume fails before `started`
  link.push(bytes(3));
  advance(499);
  assert.equal(sockets.length, 2, "the second try waits longer (backoff)");
  advance(1);
  assert.equal(sockets.length, 3);
  sockets[2].started("d-1", 1);
  sockets[2].drop(); // and drops again right after: no good connection yet, the backoff goes on
  advance(999);
  assert.equal(sockets.length, 3);
  advance(1);
  sockets[3].started("d-1", 3);
  link.push(bytes(4));
  // the service held bytes 0..0 after the first cut; socket 2 sent 1..2 and the service held them
  assert.deepEqual(sockets[2].audio(), [[1, [2]], [2, [3]]]);
  assert.deepEqual(sockets[3].audio(), [[3, [4]]]);
});

test("stop during a reconnect: the rest is sent first, then `stop`, then the final text", () => {
  const { link, sockets, finals, advance } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2));
  sockets[0].drop();
  link.push(bytes(3));
  link.stop();
  assert.equal(link.state, "reconnecting");
  advance(250);
  sockets[1].started("d-1", 2);
  assert.deepEqual(sockets[1].sent.slice(0, 1).map((m) => [...m.subarray(8)]), [[3]]);
  assert.equal(sockets[1].sent[1], "stop");
  assert.equal(link.state, "stopping");
  sockets[1].say({ type: "final", job_id: 9, text: "No acute finding." });
  assert.equal(link.state, "done");
  assert.equal(finals[0].text, "No acute finding.");
});

test("a drop after `stop` reached the service: no new recording, the final text comes from the job", () => {
  const { link, sockets, finals, advance } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1));
  link.stop();
  sockets[0].drop();
  advance(250);
  sockets[1].drop(4409, "dictation d-1 is finalizing, not interrupted");
  assert.equal(link.state, "done");
  assert.deepEqual(finals, [{ type: "final", text: null, pending: true, dictation_id: "d-1" }]);
});

test("the service not yet aware of the drop (4409 recording) is tried again", () => {
  const { link, sockets, advance } = rig();
  sockets[0].started("d-1");
  sockets[0].drop();
  advance(250);
  sockets[1].drop(4409, "dictation d-1 is recording, not interrupted");
  assert.equal(link.state, "reconnecting");
  advance(500);
  assert.equal(sockets.length, 3);
});

test("a signed-out or refused link fails with the reason and keeps the recording", () => {
  const { link, sockets } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2));
  sockets[0].drop(4401, "token revoked or expired");
  assert.equal(link.state, "failed");
  assert.match(link.reason, /session has ended/);
  assert.deepEqual([...link.recording()], [1, 2]);
});

test("after maxOfflineMs without the service the link is offline and the recording is whole", () => {
  const { link, sockets, advance, states } = rig({ maxOfflineMs: 10000 });
  sockets[0].started("d-1");
  link.push(bytes(1));
  sockets[0].drop();
  for (let i = 0; i < 20 && link.state === "reconnecting"; i += 1) {
    advance(5000);
    link.push(bytes(i + 2));
    sockets[sockets.length - 1].drop();
  }
  assert.equal(link.state, "offline");
  assert.equal(states.at(-1), "offline: the service could not be reached; the recording is kept");
  assert.equal(link.recording().length, link.recorded);
  assert.ok(link.recorded >= 3);
});

test("partials are passed on; scratch-that empties the recording and sends `reset`", () => {
  const { link, sockets, partials } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2));
  sockets[0].say({ type: "partial", committed: "No acute", text: "No acute fin" });
  assert.deepEqual(partials, [{ committed: "No acute", text: "No acute fin" }]);
  assert.equal(link.reset(), true);
  link.push(bytes(9));
  assert.equal(sockets[0].sent[1], "reset");
  assert.deepEqual(sockets[0].audio(), [[0, [1, 2]], [0, [9]]]);
  assert.deepEqual([...link.recording()], [9]);
});

test("a random schedule of drops never leaves a gap or a repeat at the service", () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let round = 0; round < 50; round += 1) {
    const { link, sockets, advance } = rig({ maxOfflineMs: 1e9 });
    let held = 0; // what the service's file holds
    const expected = [];
    let value = 0;
    const open = () => sockets[sockets.length - 1];
    open().started("d-1", 0);
    for (let step = 0; step < 40; step += 1) {
      const chunk = bytes(...Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => (value += 1) % 256));
      expected.push(...chunk);
      link.push(chunk);
      if (rnd() < 0.2 && link.state === "recording") {
        // the service keeps a prefix of what this socket sent, then the connection drops
        const got = open().audio().reduce((n, [offset, data]) => Math.max(n, offset + data.length), held);
        held = held + Math.floor(rnd() * (got - held + 1));
        open().drop();
        advance(10000);
        open().started("d-1", held);
      }
    }
    // the service's file: its held prefix plus what the last socket sent, each offset checked
    const last = open().audio();
    let file = expected.slice(0, last.length ? last[0][0] : held);
    for (const [offset, data] of last) {
      assert.equal(offset, file.length);
      file = file.concat(data);
    }
    assert.deepEqual(file, expected);
  }
});

test("the default timers are called as plain functions (a browser's throw when called on another object)", () => {
  const real = { set: globalThis.setTimeout, clear: globalThis.clearTimeout };
  const calls = [];
  globalThis.setTimeout = function strictSet(fn, ms) {
    if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
    calls.push(ms);
    return 1;
  };
  globalThis.clearTimeout = function strictClear() {
    if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
  };
  try {
    const sockets = [];
    const link = new DictationLink({ open: (params) => { const s = new FakeSocket(params); sockets.push(s); return s; } });
    sockets[0].started("d-1");
    sockets[0].drop();
    assert.equal(link.state, "reconnecting");
    assert.ok(calls.includes(1000) && calls.length === 2, String(calls)); // the watchdog and the reconnect
    link.stop();
    sockets[0].say({ type: "final", text: "x" }); // a detached socket: ignored
    link.close();
  } finally {
    globalThis.setTimeout = real.set;
    globalThis.clearTimeout = real.clear;
  }
});

test("a scratch lost in a drop is sent again before the new take: never two takes spliced in one file", () => {
  const { link, sockets, advance } = rig();
  sockets[0].started("d-1");
  link.push(bytes(1, 2, 3, 4, 5)); // the take to scratch
  assert.equal(link.reset(), true);
  sockets[0].drop(); // "reset" may never have reached the service
  link.push(bytes(9, 8)); // the new take (a new recorder: its own header)
  advance(250);
  sockets[1].started("d-1", 5); // the service still holds the scratched take
  assert.deepEqual([sockets[1].sent[0], ...sockets[1].audio()], ["reset", [0, [9, 8]]]);
  sockets[1].say({ type: "reset", received: 0 });
  sockets[1].drop();
  advance(1000);
  sockets[2].started("d-1", 2); // confirmed: no second reset, the new take goes on
  link.push(bytes(7));
  assert.deepEqual(sockets[2].sent.filter((m) => typeof m === "string"), []);
  assert.deepEqual(sockets[2].audio(), [[2, [7]]]);
  assert.equal(link.reset(), true);
  link.stop();
  assert.equal(link.reset(), false, "no scratch after Stop");
});

test("a service holding more than the page recorded is a failure in words, not a guess", () => {
  const { link, sockets } = rig();
  link.push(bytes(1));
  sockets[0].started("d-1", 5);
  assert.equal(link.state, "failed");
  assert.match(link.reason, /holds more/);
});

test("the watchdog: no `started` within 10 s, or audio not taken for 10 s, is a drop and a retry", () => {
  const { link, sockets, advance } = rig();
  advance(9000);
  assert.equal(sockets.length, 1);
  advance(1000); // nothing came back: tried again
  assert.equal(link.state, "reconnecting");
  assert.ok(sockets[0].closedByPage);
  advance(1000);
  assert.equal(sockets.length, 2);
  sockets[1].started("d-1");
  link.push(bytes(1, 2));
  sockets[1].bufferedAmount = 2; // the network went away without a close
  for (let second = 0; second < 10; second += 1) advance(1000);
  assert.equal(link.state, "recording");
  advance(1000);
  assert.equal(link.state, "reconnecting");
  assert.ok(sockets[1].closedByPage);
});

test("a connection that keeps failing right after `started` still reaches offline", () => {
  const { link, sockets, advance } = rig({ maxOfflineMs: 20000 });
  for (let i = 0; i < 40 && link.state !== "offline"; i += 1) {
    sockets[sockets.length - 1].started("d-1");
    sockets[sockets.length - 1].drop(4409, "audio out of order (a repeat)");
    advance(6000);
  }
  assert.equal(link.state, "offline");
});
