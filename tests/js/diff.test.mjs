// The word diff behind the refinement notes' before/after view.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tokens, wordDiff } from "../../radservice/web/js/diff.js";

const join = (parts, ops) => parts.filter((p) => ops.includes(p.op)).map((p) => p.text).join("");

test("a changed word is one deletion and one insertion, the rest the same", () => {
  const parts = wordDiff("no focal consolidation period", "no focal consolidation.");
  assert.deepEqual(parts, [
    { op: "same", text: "no focal " },
    { op: "del", text: "consolidation period" },
    { op: "ins", text: "consolidation." },
  ]);
});

test("the parts join back to both texts", () => {
  const before = "Lungs colon clear.  Heart size normal";
  const after = "Lungs: clear. Heart size is normal.";
  const parts = wordDiff(before, after);
  assert.equal(join(parts, ["same", "del"]), before);
  assert.equal(join(parts, ["same", "ins"]), after);
});

test("empty sides and very long texts", () => {
  assert.deepEqual(wordDiff("", "New text"), [{ op: "ins", text: "New text" }]);
  assert.deepEqual(wordDiff("Old", ""), [{ op: "del", text: "Old" }]);
  assert.deepEqual(wordDiff("a b", "a c", 1), [{ op: "del", text: "a b" }, { op: "ins", text: "a c" }]);
  assert.deepEqual(tokens("a  b"), ["a", "  ", "b"]);
});
