// Words the transcriber was unsure of, found in a section's current text so they can be
// highlighted where they stand. No DOM here: tested under Node (tests/js/unsure.test.mjs).

/** Below this probability a recognised word is shown to check. */
export const UNSURE = 0.5;

const EDGE = /^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu;
const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A recognised word as it is looked for in the text: no spaces or punctuation at its edges. */
export function bare(word) {
  return String(word || "").trim().replace(EDGE, "");
}

/**
 * Where the unsure words stand in the text. The dictations' words are followed in order through
 * the text (every found word moves a cursor on), so an unsure "the" marks the "the" that was
 * dictated there, not the first one of the text; a word the rules or the radiologist changed is
 * not found and leaves nothing marked.
 *
 * @param {string} text the section's text as it is now
 * @param {Array<{id: string, word: string, probability: number}>} words the dictated words in order
 * @param {Set<string>} accepted ids of words the radiologist accepted
 * @returns {Array<{id: string, word: string, start: number, end: number}>} in text order, not overlapping
 */
export function unsureSpans(text, words, accepted = new Set(), threshold = UNSURE) {
  const spans = [];
  const lower = text.toLowerCase();
  let cursor = 0;
  for (const { id, word, probability } of words) {
    const wanted = bare(word).toLowerCase();
    if (!wanted) continue;
    const found = new RegExp(`(?<![\\p{L}\\p{N}])${escape(wanted)}(?![\\p{L}\\p{N}])`, "gu");
    found.lastIndex = cursor;
    const match = found.exec(lower);
    if (!match) continue;
    cursor = match.index + wanted.length;
    if (typeof probability === "number" && probability < threshold && !accepted.has(id)) {
      spans.push({ id, word: text.slice(match.index, cursor), start: match.index, end: cursor });
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
