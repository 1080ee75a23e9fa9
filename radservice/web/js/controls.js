// Recording by holding a key, and by a dictation microphone's buttons. No DOM here: the page
// hands in what to do (start, stop, ...); tested under Node (tests/js/controls.test.mjs).

/** A tap of a hold key that also types (Space) shorter than this types; held longer, it talks. */
export const TAP_MS = 300;
/** A microphone's Record button held at least this long stops when released (press and hold);
 * a shorter press toggles (press to start, press again to stop). */
export const HOLD_MS = 600;

/**
 * Hold to talk: recording while the key is down. With a delay (Space), a short tap is a tap
 * (the page types the space), and another key pressed meanwhile makes it a tap at once (fast
 * typing rolls over keys).
 */
export class HoldKey {
  /**
   * @param {object} options
   * @param {number} options.delayMs 0: recording starts on the key's press
   * @param {() => void} options.onHold
   * @param {() => void} options.onRelease
   * @param {() => void} [options.onTap]
   */
  constructor({ delayMs, onHold, onRelease, onTap = () => {},
    setTimer = (fn, ms) => setTimeout(fn, ms), clearTimer = (timer) => clearTimeout(timer) }) {
    Object.assign(this, { delayMs, onHold, onRelease, onTap, setTimer, clearTimer });
    this.state = "up"; // up | pressed (deciding) | holding | tapped (down, already typed)
    this.timer = null;
  }

  /** The key went down (auto-repeats included: they change nothing). */
  down() {
    if (this.state !== "up") return;
    if (this.delayMs <= 0) {
      this.state = "holding";
      this.onHold();
      return;
    }
    this.state = "pressed";
    this.timer = this.setTimer(() => {
      this.timer = null;
      if (this.state !== "pressed") return;
      this.state = "holding";
      this.onHold();
    }, this.delayMs);
  }

  up() {
    const was = this.state;
    this.state = "up";
    this.stopTimer();
    if (was === "pressed") this.onTap();
    else if (was === "holding") this.onRelease();
  }

  /** Another key while this one is down: before it is decided, this one was a tap. */
  other() {
    if (this.state !== "pressed") return;
    this.stopTimer();
    this.state = "tapped";
    this.onTap();
  }

  /** The page lost the keyboard (another window): the release will never come. */
  cancel() {
    const was = this.state;
    this.state = "up";
    this.stopTimer();
    if (was === "holding") this.onRelease();
  }

  stopTimer() {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
  }
}

/**
 * A dictation microphone's buttons (dictation_support's ButtonEvent bits, all buttons down at
 * once in one mask) to the page's actions. Record: a press starts (or stops, when recording); a
 * press held HOLD_MS or longer stops at its release. Stop stops; Play plays the sentence at the
 * cursor; the tab/EOL buttons move to the next or previous section.
 */
export class MicButtons {
  /**
   * @param {Record<string, number>} events dictation_support's ButtonEvent
   * @param {object} actions
   * @param {() => boolean} actions.recording
   * @param {() => void} actions.start
   * @param {() => void} actions.stop
   * @param {(step: number) => void} actions.move next (1) or previous (-1) section
   * @param {() => void} actions.play
   */
  constructor(events, actions, now = () => performance.now()) {
    Object.assign(this, { events, actions, now });
    this.last = new Map(); // device -> mask
    this.recordDown = new Map(); // device -> when a press started recording
  }

  /**
   * A device's buttons changed: ``mask`` is every button down now. With ``act`` false (the page
   * is not the one in front) presses do nothing; a release still ends a hold this page started.
   */
  press(device, mask, act = true) {
    const before = this.last.get(device) || 0;
    this.last.set(device, mask);
    const pressed = act ? mask & ~before : 0;
    const released = before & ~mask;
    const E = this.events;
    if (pressed & E.RECORD) {
      if (this.actions.recording()) {
        this.recordDown.delete(device);
        this.actions.stop();
      } else {
        this.recordDown.set(device, this.now());
        this.actions.start();
      }
    } else if (released & E.RECORD && this.recordDown.has(device)) {
      const since = this.recordDown.get(device);
      this.recordDown.delete(device);
      if (this.now() - since >= HOLD_MS && this.actions.recording()) this.actions.stop();
    }
    if (pressed & E.STOP && this.actions.recording()) this.actions.stop();
    if (pressed & E.PLAY) this.actions.play();
    if (pressed & (E.TAB_FORWARD | E.EOL_PRIO)) this.actions.move(1);
    if (pressed & E.TAB_BACKWARD) this.actions.move(-1);
  }

  /** A device went away: its buttons are up. */
  forget(device) {
    this.last.delete(device);
    this.recordDown.delete(device);
  }
}
