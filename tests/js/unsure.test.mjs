// Finding the transcriber's unsure words in a section's text, for highlighting them in place.
import { test } from "node:test";
import assert from "node:assert/strict";
import { align, audioSpan, bare, nextSpan, pieces, sentenceAt, unsureSpans } from "../../radservice/web/js/unsure.js";

const words = (...list) => list.map(([word, probability], i) => ({ id: `d1:${i}`, word, probability }));

test("an unsure word is marked where it was dictated, not at its first occurrence", () => {
  const text = "The liver is normal. The spleen is enlarged.";
  const spans = unsureSpans(text, words([" The", 0.9], [" liver", 0.9], [" is", 0.9], [" normal.", 0.9],
    [" The", 0.3], [" spleen", 0.2], [" is", 0.9], [" enlarged.", 0.95]));
  assert.deepEqual(spans.map((s) => [s.word, s.start]), [["The", 21], ["spleen", 25]]);
});

test("a word changed by the rules or the radiologist is no longer marked; accepted ones neither", () => {
  const dictated = words([" no", 0.9], [" pleural", 0.2], [" effusion", 0.4]);
  assert.deepEqual(unsureSpans("No pleural effusion.", dictated).map((s) => s.word), ["pleural", "effusion"]);
  assert.deepEqual(unsureSpans("No pleural fluid.", dictated).map((s) => s.word), ["pleural"]);
  assert.deepEqual(unsureSpans("No pleural effusion.", dictated, new Set(["d1:1"])).map((s) => s.word),
    ["effusion"]);
  assert.deepEqual(unsureSpans("No pleural effusion.", dictated, new Set(), 0.1), []);
});

test("whole words only, any case, punctuation and regex characters harmless", () => {
  const dictated = words([" cm", 0.1], [" (C5-C6)", 0.2], [" a+b?", 0.3]);
  const text = "Measures 3 cmm, 2 CM at (c5-c6); a+b?";
  assert.deepEqual(unsureSpans(text, dictated).map((s) => s.word), ["CM", "c5-c6", "a+b"]);
  assert.equal(bare(" ...word,"), "word");
  assert.deepEqual(unsureSpans("anything", words([" ...", 0.1], ["", 0.1])), []);
});

test("the pieces join back to the text, marks where the spans are", () => {
  const text = "Small nodule in the right lung";
  const spans = unsureSpans(text, words([" small", 0.9], [" nodule", 0.3], [" lung", 0.1]));
  const parts = pieces(text, spans);
  assert.equal(parts.map((p) => p.text).join(""), text);
  assert.deepEqual(parts.filter((p) => p.mark).map((p) => p.text), ["nodule", "lung"]);
  assert.deepEqual(pieces("", []), [{ text: "", mark: null }]);
});

test("a word cleaned up or changed earlier moves no later unsure word out of place (the review's cases)", () => {
  const stutter = words([" The", 0.9], [" the", 0.9], [" liver", 0.9], [" lesion", 0.9], [" in", 0.9],
    [" segment", 0.9], [" seven.", 0.3], [" The", 0.9], [" spleen", 0.9], [" is", 0.9], [" normal.", 0.9]);
  assert.deepEqual(unsureSpans("The liver lesion in segment seven. The spleen is normal.", stutter)
    .map((s) => s.word), ["seven"]);
  const changed = words([" No", 0.9], [" fluid.", 0.9], [" Nodule", 0.3], [" in", 0.9], [" the", 0.9],
    [" left", 0.2], [" lung.", 0.9], [" No", 0.9], [" fluid.", 0.9]);
  assert.deepEqual(unsureSpans("No effusion. Nodule in the left lung. No fluid.", changed).map((s) => s.word),
    ["Nodule", "left"]);
});

test("positions are those of the original text, whatever lower-casing does to its length", () => {
  const text = "İİ nodule";
  const [span] = unsureSpans(text, words([" nodule", 0.2]));
  assert.equal(text.slice(span.start, span.end), "nodule");
});

test("the dictated words are found where they stand, with their times, for playing them back", () => {
  const said = [[" The", 0.0, 0.2], [" liver", 0.2, 0.6], [" is", 0.6, 0.7], [" normal.", 0.7, 1.2],
    [" The", 1.5, 1.6], [" spleen", 1.6, 2.0], [" is", 2.0, 2.1], [" enlarged.", 2.1, 2.8]]
    .map(([word, start, end], i) => ({ id: `d1:${i}`, dictation: "d1", word, start, end }));
  const text = "The liver is normal.\n\nThe spleen is mildly enlarged.";
  const found = align(text, said);
  assert.deepEqual(found.map((f) => text.slice(f.start, f.end)),
    ["The", "liver", "is", "normal", "The", "spleen", "is", "enlarged"]);
  // a caret in or at the edge of a word plays that word; a selection, the words it overlaps
  assert.deepEqual(audioSpan(found, 6, 6), { dictation: "d1", start: 0.2, end: 0.6 });
  assert.deepEqual(audioSpan(found, 9, 9), { dictation: "d1", start: 0.2, end: 0.6 });
  assert.deepEqual(audioSpan(found, 4, 12), { dictation: "d1", start: 0.2, end: 0.7 });
  // a word the radiologist typed has no audio; a sentence plays from its first to its last dictated word
  const mildly = text.indexOf("mildly");
  assert.equal(audioSpan(found, mildly + 2, mildly + 2), null);
  const sentence = sentenceAt(text, mildly);
  assert.equal(text.slice(sentence.start, sentence.end), "The spleen is mildly enlarged.");
  assert.deepEqual(audioSpan(found, sentence.start, sentence.end), { dictation: "d1", start: 1.5, end: 2.8 });
  assert.deepEqual(align("", said), []);
  assert.equal(audioSpan([], 0, 0), null);
});

test("sentences end at . ! ? before a space or the end, and at a blank line; decimals do not end them", () => {
  const text = "Nodule of 3.5 mm. Stable!  Next line\n\nNew paragraph? yes";
  const at = (word) => { const s = sentenceAt(text, text.indexOf(word)); return text.slice(s.start, s.end); };
  assert.equal(at("mm"), "Nodule of 3.5 mm.");
  assert.equal(at("Stable"), "Stable!");
  assert.equal(at("Next"), "Next line");
  assert.equal(at("paragraph"), "New paragraph?");
  assert.equal(at("yes"), "yes");
  assert.deepEqual(sentenceAt("", 0), { start: 0, end: 0 });
});

test("the next word to check follows the caret and wraps around", () => {
  const spans = [{ start: 4 }, { start: 20 }];
  assert.equal(nextSpan(spans, 0).start, 4);
  assert.equal(nextSpan(spans, 5).start, 20);
  assert.equal(nextSpan(spans, 21).start, 4);
  assert.equal(nextSpan([], 3), null);
});

test("a word the rules rewrote plays what was said between its dictated neighbours; a line ends a sentence", () => {
  const said = [[" measures", 0.5, 1.0], [" five", 1.1, 1.4], [" millimeters", 1.4, 2.0], [" in", 2.1, 2.2],
    [" size.", 2.2, 2.6]].map(([word, start, end], i) => ({ id: `d1:${i}`, dictation: "d1", word, start, end }));
  const text = "Nodule measures 5 mm in size.\nLiver normal";
  const found = align(text, said);
  const five = text.indexOf("5");
  assert.deepEqual(audioSpan(found, five, five), { dictation: "d1", start: 1.0, end: 2.1 });
  assert.deepEqual(audioSpan(found, five, five + 4), { dictation: "d1", start: 1.0, end: 2.1 });
  // "Nodule" was typed before the first dictated word: nothing said before it to play
  assert.equal(audioSpan(found, 2, 2), null);
  const line = sentenceAt(text, text.indexOf("Liver"));
  assert.equal(text.slice(line.start, line.end), "Liver normal");
  const first = sentenceAt(text, 3);
  assert.equal(text.slice(first.start, first.end), "Nodule measures 5 mm in size.");
});
