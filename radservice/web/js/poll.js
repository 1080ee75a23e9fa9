// Polling that backs off while the service does not answer and comes back to its pace when it
// does. No DOM: tested under Node with fake timers (tests/js/poll.test.mjs).

/**
 * Call `task` every `every` ms (the next call is scheduled when the last one has finished). A
 * failing call doubles the wait, up to `maxBackoff` ms; `onError(error, waitMs)` says so; the
 * first success after failures calls `onRecovered()`.
 * @returns {{stop: Function, now: Function}} `now()` runs the task at once (and re-schedules).
 */
export function poll(task, { every = 5000, maxBackoff = 60000, onError = () => {}, onRecovered = () => {},
  timers = globalThis } = {}) {
  let timer = null;
  let stopped = false;
  let wait = every;
  let failing = false;
  let running = false;

  async function run() {
    timer = null;
    if (stopped || running) return;
    running = true;
    try {
      await task();
      if (failing) onRecovered();
      failing = false;
      wait = every;
    } catch (error) {
      failing = true;
      wait = Math.min(Math.max(wait, every) * 2, maxBackoff);
      onError(error, wait);
    } finally {
      running = false;
    }
    schedule();
  }

  function schedule() {
    if (stopped) return;
    if (timer !== null) timers.clearTimeout(timer);
    timer = timers.setTimeout(run, wait);
  }

  schedule();
  return {
    stop() {
      stopped = true;
      if (timer !== null) timers.clearTimeout(timer);
      timer = null;
    },
    now() {
      if (timer !== null) timers.clearTimeout(timer);
      timer = null;
      return run();
    },
  };
}
