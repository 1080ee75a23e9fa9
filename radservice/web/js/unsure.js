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
 * The dictated words found in the current text: the dictated words are aligned with the words of
 * the text (longest common subsequence), so a "the" is found where it was dictated, a word the
 * rules or the radiologist changed is not found, and a word removed or changed elsewhere (a
 * stutter cleaned up) moves nothing else out of place.
 *
 * @param {string} text the section's text as it is now
 * @param {Array<{word: string}>} words the dictated words in order (any other fields are kept)
 * @returns {Array<{said: object, start: number, end: number}>} each found word with where it stands,
 *   in text order; [] when the alignment would be too large
 */
export function align(text, words) {
  const said = words.map((w) => ({ w, key: bare(w.word).toLocaleLowerCase() })).filter((w) => w.key);
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
  const found = [];
  for (let i = 0, j = 0; i < n && j < m;) {
    if (said[i].key === written[j].key && table[i * cols + j] === table[(i + 1) * cols + j + 1] + 1) {
      found.push({ said: said[i].w, start: written[j].start, end: written[j].end });
      i += 1;
      j += 1;
    } else if (table[(i + 1) * cols + j] >= table[i * cols + j + 1]) {
      i += 1;
    } else {
      j += 1;
    }
  }
  return found;
}

/**
 * Where the unsure words stand in the text (see align), until edited away or accepted.
 *
 * @param {string} text the section's text as it is now
 * @param {Array<{id: string, word: string, probability: number}>} words the dictated words in order
 * @param {Set<string>} accepted ids of words the radiologist accepted
 * @returns {Array<{id: string, word: string, start: number, end: number}>} in text order, not overlapping
 */
export function unsureSpans(text, words, accepted = new Set(), threshold = UNSURE) {
  const unsure = (w) => typeof w.probability === "number" && w.probability < threshold && !accepted.has(w.id);
  if (!words.some((w) => bare(w.word) && unsure(w))) return [];
  return align(text, words).filter(({ said }) => unsure(said))
    .map(({ said, start, end }) => ({ id: said.id, word: text.slice(start, end), start, end }));
}

/** The next unsure span after ``offset`` (the first one again after the last), or null. */
export function nextSpan(spans, offset) {
  return spans.find((span) => span.start >= offset) || spans[0] || null;
}

/** The span of the sentence holding ``offset``: from after the previous . ! ? or line end to its
 * own end mark (or the line's end: findings are often one organ a line, without a period),
 * spaces at its edges left out. */
export function sentenceAt(text, offset) {
  const ends = /[.!?](?=\s|$)|\n/g;
  let start = 0;
  let end = text.length;
  for (const match of text.matchAll(ends)) {
    const after = match.index + match[0].length;
    if (after <= offset) {
      start = after;
    } else {
      end = match[0] === "\n" ? match.index : after;
      break;
    }
  }
  while (start < end && /\s/.test(text[start])) start += 1;
  while (end > start && /\s/.test(text[end - 1])) end -= 1;
  return { start, end };
}

/**
 * The stretch of audio to play for a part of the text: the dictated words found between
 * ``from`` and ``to``, with the dictation they came from.
 * Words of one dictation only (the first found): a sentence spoken across two takes plays the
 * first take's part.
 *
 * @param {Array<{said: {dictation: string, start: number, end: number}, start: number, end: number}>} found align's answer
 * @returns {{dictation: string, start: number, end: number}|null} times in s
 */
export function audioSpan(found, from, to) {
  // a caret (nothing selected) plays the word it stands in or touches; a selection, the words it overlaps
  const touches = from === to ? (f) => f.start <= from && from <= f.end : (f) => f.end > from && f.start < to;
  const timed = found.filter((f) => typeof f.said.start === "number" && typeof f.said.end === "number"
    && f.said.dictation);
  const hit = timed.filter(touches);
  if (!hit.length) {
    // a word the rules rewrote ("five millimeters" is "5 mm"): what was said between the dictated
    // words found on either side of it, when they are of one take and something lies between
    const before = timed.filter((f) => f.end <= from).at(-1);
    const after = timed.find((f) => f.start >= to);
    if (!before || !after || before.said.dictation !== after.said.dictation) return null;
    if (after.said.start - before.said.end < 0.05) return null;
    return { dictation: before.said.dictation, start: before.said.end, end: after.said.start };
  }
  const dictation = hit[0].said.dictation;
  const same = hit.filter((f) => f.said.dictation === dictation);
  return { dictation, start: Math.min(...same.map((f) => f.said.start)), end: Math.max(...same.map((f) => f.said.end)) };
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
