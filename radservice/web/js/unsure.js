// Words the transcriber was unsure of, found in a section's current text so they can be
// highlighted where they stand. No DOM here: tested under Node (tests/js/unsure.test.mjs).

/** Below this probability a recognised word is shown to check. */
export const UNSURE = 0.5;

const EDGE = /^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu;
const INNER = /[\p{L}\p{N}](?:.*[\p{L}\p{N}])?/u;
/** Above this many cells (dictated words x words of text) the alignment is not attempted. */
export const MAX_CELLS = 4_000_000;

/** A recognised word as it is compared with the text: no spaces or punctuation at its edges. */
export function bare(word) {
  return String(word || "").trim().replace(EDGE, "");
}

/** The words of the text with where they stand (punctuation at their edges left out). */
export function textWords(text) {
  const words = [];
  for (const match of text.matchAll(/\S+/g)) {
    const inner = INNER.exec(match[0]);
    if (!inner) continue;
    const start = match.index + inner.index;
    words.push({ key: inner[0].toLocaleLowerCase(), start, end: start + inner[0].length });
  }
  return words;
}

/**
 * Where the unsure words stand in the text. The dictated words are aligned with the words of
 * the current text (longest common subsequence), so an unsure "the" marks the "the" that was
 * dictated there, a word the rules or the radiologist changed is no longer marked, and a word
 * removed or changed elsewhere (a stutter cleaned up) moves nothing else out of place.
 *
 * @param {string} text the section's text as it is now
 * @param {Array<{id: string, word: string, probability: number}>} words the dictated words in order
 * @param {Set<string>} accepted ids of words the radiologist accepted
 * @returns {Array<{id: string, word: string, start: number, end: number}>} in text order, not overlapping
 */
export function unsureSpans(text, words, accepted = new Set(), threshold = UNSURE) {
  const said = words.map((w) => ({ ...w, key: bare(w.word).toLocaleLowerCase() })).filter((w) => w.key);
  if (!said.some((w) => typeof w.probability === "number" && w.probability < threshold && !accepted.has(w.id))) {
    return [];
  }
  const written = textWords(text);
  const n = said.length;
  const m = written.length;
  if (!n || !m || n * m > MAX_CELLS) return [];
  const cols = m + 1;
  const table = new Uint32Array((n + 1) * cols);
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      table[i * cols + j] = said[i].key === written[j].key
        ? table[(i + 1) * cols + j + 1] + 1
        : Math.max(table[(i + 1) * cols + j], table[i * cols + j + 1]);
    }
  }
  const spans = [];
  for (let i = 0, j = 0; i < n && j < m;) {
    if (said[i].key === written[j].key && table[i * cols + j] === table[(i + 1) * cols + j + 1] + 1) {
      const { id, probability } = said[i];
      if (typeof probability === "number" && probability < threshold && !accepted.has(id)) {
        const { start, end } = written[j];
        spans.push({ id, word: text.slice(start, end), start, end });
      }
      i += 1;
      j += 1;
    } else if (table[(i + 1) * cols + j] >= table[i * cols + j + 1]) {
      i += 1;
    } else {
      j += 1;
    }
  }
  return spans;
}

/** The text cut at the spans: [{text, mark}] (mark = the span's id or null), joining back to the text. */
export function pieces(text, spans) {
  const parts = [];
  let at = 0;
  for (const span of spans) {
    if (span.start > at) parts.push({ text: text.slice(at, span.start), mark: null });
    parts.push({ text: text.slice(span.start, span.end), mark: span.id });
    at = span.end;
  }
  if (at < text.length || !parts.length) parts.push({ text: text.slice(at), mark: null });
  return parts;
}
