// Hold-to-talk keys and a dictation microphone's buttons, as the page uses them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HOLD_MS, HoldKey, MicButtons, TAP_MS } from "../../radservice/web/js/controls.js";

function clock() {
  const timers = [];
  return {
    timers,
    setTimer: (fn, ms) => { const t = { fn, ms, live: true }; timers.push(t); return t; },
    clearTimer: (t) => { t.live = false; },
    fire: () => { for (const t of timers.splice(0)) if (t.live) t.fn(); },
  };
}

function holdKey(delayMs) {
  const calls = [];
  const c = clock();
  const key = new HoldKey({ delayMs, onHold: () => calls.push("hold"), onRelease: () => calls.push("release"),
    onTap: () => calls.push("tap"), setTimer: c.setTimer, clearTimer: c.clearTimer });
  return { key, calls, c };
}

test("Space: a tap types, a hold talks until released, auto-repeat changes nothing", () => {
  const { key, calls, c } = holdKey(TAP_MS);
  key.down();
  key.up();
  assert.deepEqual(calls, ["tap"]);
  c.fire(); // the tap's timer, cleared: nothing
  assert.deepEqual(calls, ["tap"]);
  key.down();
  key.down();
  c.fire();
  key.down();
  assert.deepEqual(calls, ["tap", "hold"]);
  key.up();
  assert.deepEqual(calls, ["tap", "hold", "release"]);
});

test("Space rolled over into the next letter is a tap at once, and its release does nothing", () => {
  const { key, calls, c } = holdKey(TAP_MS);
  key.down();
  key.other();
  c.fire();
  key.up();
  assert.deepEqual(calls, ["tap"]);
  key.other(); // nothing down: nothing
  assert.deepEqual(calls, ["tap"]);
});

test("an F-key held talks from its press; the page losing the keyboard ends the hold", () => {
  const { key, calls } = holdKey(0);
  key.down();
  assert.deepEqual(calls, ["hold"]);
  key.other(); // typing while holding: still recording
  key.cancel();
  key.up();
  assert.deepEqual(calls, ["hold", "release"]);
  const pressed = holdKey(TAP_MS);
  pressed.key.down();
  pressed.key.cancel(); // undecided: neither a tap nor a hold
  pressed.c.fire();
  assert.deepEqual(pressed.calls, []);
});

const E = { RECORD: 32, STOP: 256, PLAY: 2, TAB_FORWARD: 131072, TAB_BACKWARD: 65536, EOL_PRIO: 16384 };

function mic() {
  let now = 0;
  let recording = false;
  const calls = [];
  const buttons = new MicButtons(E, {
    recording: () => recording,
    start: () => { recording = true; calls.push("start"); },
    stop: () => { recording = false; calls.push("stop"); },
    move: (step) => calls.push(step > 0 ? "next" : "previous"),
    play: () => calls.push("play"),
  }, () => now);
  return { buttons, calls, at: (t) => { now = t; } };
}

test("Record: a short press toggles, a long press talks until released", () => {
  const { buttons, calls, at } = mic();
  const pm = {};
  buttons.press(pm, E.RECORD);
  at(100);
  buttons.press(pm, 0);
  assert.deepEqual(calls, ["start"]); // a short press: still recording
  at(5000);
  buttons.press(pm, E.RECORD);
  buttons.press(pm, 0);
  assert.deepEqual(calls, ["start", "stop"]);
  at(6000);
  buttons.press(pm, E.RECORD);
  at(6000 + HOLD_MS + 1);
  buttons.press(pm, 0);
  assert.deepEqual(calls, ["start", "stop", "start", "stop"]);
});

test("Stop, Play and the section buttons; two devices do not mix their buttons", () => {
  const { buttons, calls } = mic();
  const a = {};
  const b = {};
  buttons.press(a, E.STOP); // not recording: nothing to stop
  buttons.press(a, 0);
  buttons.press(a, E.RECORD);
  buttons.press(b, E.RECORD | E.PLAY); // another device's Record while recording: stops
  buttons.press(a, E.RECORD | E.TAB_FORWARD); // Record still down on a: no new press
  buttons.press(b, E.RECORD | E.PLAY | E.EOL_PRIO);
  buttons.press(a, E.TAB_BACKWARD);
  assert.deepEqual(calls, ["start", "stop", "play", "next", "next", "previous"]);
  buttons.forget(a);
  buttons.press(a, E.RECORD);
  assert.equal(calls.at(-1), "start");
});

test("a page not in front ignores presses, but a hold it started still ends at the release", () => {
  const { buttons, calls, at } = mic();
  const pm = {};
  buttons.press(pm, E.RECORD | E.PLAY, false);
  buttons.press(pm, 0, false);
  assert.deepEqual(calls, []);
  buttons.press(pm, E.RECORD);
  at(HOLD_MS + 50);
  buttons.press(pm, 0, false); // the window lost the focus while the button was held
  assert.deepEqual(calls, ["start", "stop"]);
});
