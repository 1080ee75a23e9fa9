// A word diff (longest common subsequence) for the refinement notes' before/after view.
// No DOM: tested under Node (tests/js/diff.test.mjs).

/** Split into words and the spaces between them (both kept, so the parts join back to the text). */
export function tokens(text) {
  return text.match(/\s+|[^\s]+/g) || [];
}

/**
 * The changes from `before` to `after`: a list of {op: "same"|"del"|"ins", text}, neighbours of
 * the same op merged. Texts longer than `limit` tokens on both sides fall back to one del and
 * one ins (the table would be too large).
 */
export function wordDiff(before, after, limit = 2000) {
  const a = tokens(before);
  const b = tokens(after);
  if (a.length * b.length > limit * limit) {
    return merge([{ op: "del", text: before }, { op: "ins", text: after }].filter((p) => p.text));
  }
  const rows = a.length + 1;
  const cols = b.length + 1;
  const table = new Uint32Array(rows * cols);
  for (let i = a.length - 1; i >= 0; i -= 1) {
    for (let j = b.length - 1; j >= 0; j -= 1) {
      table[i * cols + j] = a[i] === b[j]
        ? table[(i + 1) * cols + j + 1] + 1
        : Math.max(table[(i + 1) * cols + j], table[i * cols + j + 1]);
    }
  }
  const parts = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      parts.push({ op: "same", text: a[i] });
      i += 1;
      j += 1;
    } else if (table[(i + 1) * cols + j] >= table[i * cols + j + 1]) {
      parts.push({ op: "del", text: a[i] });
      i += 1;
    } else {
      parts.push({ op: "ins", text: b[j] });
      j += 1;
    }
  }
  while (i < a.length) parts.push({ op: "del", text: a[i++] });
  while (j < b.length) parts.push({ op: "ins", text: b[j++] });
  return merge(parts);
}

function merge(parts) {
  const out = [];
  for (const part of parts) {
    const last = out[out.length - 1];
    if (last && last.op === part.op) last.text += part.text;
    else out.push({ ...part });
  }
  return out;
}
