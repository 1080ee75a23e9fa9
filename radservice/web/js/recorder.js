// The microphone: MediaRecorder's WebM/Opus chunks in order, a level for the meter, and a word
// when nothing is heard. The browser's media APIs only; what happens to the chunks is
// dictation.js's business.

const CHUNK_MS = 250;
/** Below this RMS level (0..1) the microphone is taken as silent. */
const SILENT_LEVEL = 0.01;

/** The type MediaRecorder should make: WebM/Opus where the browser can (Chromium, Firefox). */
export function pickType(isSupported) {
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus"]) {
    if (isSupported(type)) return type;
  }
  return "";
}

export class Recorder {
  /**
   * @param {object} handlers
   * @param {(bytes: Uint8Array) => void} handlers.onChunk each chunk, in recording order
   * @param {(level: number) => void} [handlers.onLevel] about 10 times a second, 0..1
   * @param {(seconds: number) => void} [handlers.onSilence] seconds without signal (0 when it comes back)
   */
  constructor({ onChunk, onLevel = () => {}, onSilence = () => {} }) {
    Object.assign(this, { onChunk, onLevel, onSilence });
    this.chain = Promise.resolve();
    this.stream = null;
    this.recorder = null;
    this.audio = null;
    this.meterTimer = null;
  }

  /** Ask for the microphone and start recording; throws an Error whose message is said to the person. */
  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
      throw new Error("this browser cannot record audio here (a secure connection, https, is needed)");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      const words = {
        NotAllowedError: "the microphone is blocked for this page: allow it in the browser's address bar",
        NotFoundError: "no microphone was found: connect one and try again",
        NotReadableError: "the microphone is in use by another program",
      };
      throw new Error(words[error.name] || `the microphone could not be opened (${error.name || error})`);
    }
    this.startMeter();
    this.begin();
  }

  /** A new recording on the same microphone (after "scratch that": a new WebM header). */
  async restart() {
    await this.finish();
    this.begin();
  }

  /** The recorder's last chunk delivered; the microphone stays open. */
  finish() {
    const recorder = this.recorder;
    if (!recorder || recorder.state === "inactive") return this.chain;
    return new Promise((resolve) => {
      recorder.addEventListener("stop", () => resolve(this.chain), { once: true });
      recorder.stop();
    });
  }

  /** Stop everything and let the microphone go. */
  async release() {
    await this.finish();
    clearInterval(this.meterTimer);
    if (this.audio) this.audio.close().catch(() => {});
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.audio = null;
  }

  // ---- inside

  begin() {
    const type = pickType((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(this.stream, type ? { mimeType: type, audioBitsPerSecond: 32000 } : {});
    recorder.addEventListener("dataavailable", (event) => {
      if (!event.data || !event.data.size) return;
      // chunks are read one after another, so they leave in the order they were recorded
      this.chain = this.chain.then(() => event.data.arrayBuffer()).then((buffer) => this.onChunk(new Uint8Array(buffer)));
    });
    recorder.start(CHUNK_MS);
    this.recorder = recorder;
  }

  startMeter() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return;
    this.audio = new Context();
    const analyser = this.audio.createAnalyser();
    analyser.fftSize = 1024;
    this.audio.createMediaStreamSource(this.stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let silentSince = null;
    this.meterTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const value of samples) sum += value * value;
      const level = Math.sqrt(sum / samples.length);
      this.onLevel(Math.min(1, level * 4));
      const now = performance.now();
      if (level < SILENT_LEVEL) {
        if (silentSince === null) silentSince = now;
        this.onSilence((now - silentSince) / 1000);
      } else if (silentSince !== null) {
        silentSince = null;
        this.onSilence(0);
      }
    }, 100);
  }
}
