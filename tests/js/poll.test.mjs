// Polling with backoff: the pace, doubling on failure up to a ceiling, back to the pace after.
import { test } from "node:test";
import assert from "node:assert/strict";
import { poll } from "../../radservice/web/js/poll.js";

/** Timers run by hand: `tick()` runs the one pending callback and says after how long. */
function fakeTimers() {
  let pending = null;
  let id = 0;
  return {
    setTimeout(fn, ms) { id += 1; pending = { fn, ms, id }; return id; },
    clearTimeout(which) { if (pending && pending.id === which) pending = null; },
    async tick() {
      const current = pending;
      assert.ok(current, "a call is scheduled");
      pending = null;
      await current.fn();
      return current.ms;
    },
    get waiting() { return pending ? pending.ms : null; },
  };
}

test("it polls at its pace, backs off while failing, and recovers", async () => {
  const timers = fakeTimers();
  const outcomes = [true, false, false, false, true, true];
  const errors = [];
  let recovered = 0;
  const poller = poll(async () => {
    if (!outcomes.shift()) throw new Error("offline");
  }, { every: 1000, maxBackoff: 5000, timers, onError: (e, wait) => errors.push(wait),
    onRecovered: () => { recovered += 1; } });
  const waits = [];
  for (let n = 0; n < 6; n += 1) waits.push(await timers.tick());
  assert.deepEqual(waits, [1000, 1000, 2000, 4000, 5000, 1000]);
  assert.deepEqual(errors, [2000, 4000, 5000]);
  assert.equal(recovered, 1);
  assert.equal(timers.waiting, 1000);
  poller.stop();
  assert.equal(timers.waiting, null);
});

test("now() runs at once and stop() ends it", async () => {
  const timers = fakeTimers();
  let calls = 0;
  const poller = poll(async () => { calls += 1; }, { every: 5000, timers });
  await poller.now();
  assert.equal(calls, 1);
  assert.equal(timers.waiting, 5000);
  poller.stop();
  await poller.now();
  assert.equal(calls, 1);
});
