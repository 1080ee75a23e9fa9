// The page's API client: requests, error words, the offline and signed-out cases.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Api, ApiError, detailOf, queryOf } from "../../radservice/web/js/api.js";

function fakeFetch(answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    const next = answers.shift();
    if (next instanceof Error) throw next;
    const { status = 200, body = null, headers = {} } = next;
    return {
      status,
      ok: status >= 200 && status < 300,
      text: async () => (body === null ? "" : JSON.stringify(body)),
      blob: async () => ({ blob: body }),
      headers: { get: (name) => headers[name] ?? null },
    };
  };
  return { fetch, calls };
}

test("a PATCH sends JSON with the revision and the cookie, and returns the body", async () => {
  const { fetch, calls } = fakeFetch([{ body: { report_id: 7, revision: 3 } }]);
  const api = new Api({ fetch });
  const report = await api.edit(7, { findings: "Clear." }, 2);
  assert.deepEqual(report, { report_id: 7, revision: 3 });
  assert.equal(calls[0].url, "/api/v1/reports/7");
  assert.equal(calls[0].init.method, "PATCH");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.deepEqual(JSON.parse(calls[0].init.body), { sections: { findings: "Clear." }, revision: 2 });
});

test("an error answer becomes an ApiError with the service's words", async () => {
  const { fetch } = fakeFetch([{ status: 409, body: { detail: "report 7 is at revision 4, not 2" } }]);
  const api = new Api({ fetch });
  await assert.rejects(api.edit(7, {}, 2), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 409);
    assert.ok(error.conflict);
    assert.equal(error.message, "report 7 is at revision 4, not 2");
    return true;
  });
});

test("no answer at all is an offline error (status 0), not an exception of fetch", async () => {
  const { fetch } = fakeFetch([new TypeError("Failed to fetch")]);
  const api = new Api({ fetch });
  await assert.rejects(api.me(), (error) => error.offline && /cannot be reached/.test(error.message));
});

test("a 401 tells the page (back to sign-in), except for the sign-in itself", async () => {
  const told = [];
  const { fetch } = fakeFetch([
    { status: 401, body: { detail: "your session has ended" } },
    { status: 401, body: { detail: "wrong username or password" } },
  ]);
  const api = new Api({ fetch, onSignedOut: (error) => told.push(error.detail) });
  await assert.rejects(api.worklist());
  await assert.rejects(api.signIn("dr", "x"));
  assert.deepEqual(told, ["your session has ended"]);
});

test("a 429 keeps Retry-After; 204 is null", async () => {
  const { fetch } = fakeFetch([
    { status: 429, body: { detail: "locked for 15 minutes" }, headers: { "Retry-After": "900" } },
    { status: 204 },
  ]);
  const api = new Api({ fetch });
  await assert.rejects(api.signIn("dr", "x"), (error) => error.retryAfter === 900);
  assert.equal(await api.signOut(), null);
});

test("validation errors are put in words; queries leave out empty filters", () => {
  assert.equal(detailOf({ detail: [{ loc: ["body", "revision"], msg: "Field required" }] }, 422),
    "revision: Field required");
  assert.equal(detailOf(null, 502), "the service answered 502");
  assert.equal(queryOf({ status: "", modality: "CT", priority: ["S", "A"], offset: 0 }),
    "?modality=CT&priority=S%2CA&offset=0");
  assert.equal(queryOf({}), "");
});

test("accessions are escaped in paths", async () => {
  const { fetch, calls } = fakeFetch([{ body: {} }]);
  await new Api({ fetch }).study("A/1 B");
  assert.equal(calls[0].url, "/api/v1/studies/A%2F1%20B");
});

test("a recording is uploaded as multipart, naming the user and the issuer; the socket's address too", async () => {
  const { fetch, calls } = fakeFetch([{ status: 202, body: { dictation_id: "d-2", job_id: 5 } }]);
  const api = new Api({ fetch });
  api.user = "dr.ä";
  const answer = await api.uploadDictation("ACC 1", "", "findings", new Uint8Array([1, 2, 3]));
  assert.deepEqual(answer, { dictation_id: "d-2", job_id: 5 });
  assert.equal(calls[0].url, "/api/v1/studies/ACC%201/dictations?issuer=");
  assert.ok(calls[0].init.body instanceof FormData);
  assert.equal(calls[0].init.headers["Content-Type"], undefined); // the browser sets the boundary
  assert.equal(calls[0].init.headers["X-Radservice-User"], "dr.%C3%A4");
  assert.equal(calls[0].init.body.get("section"), "findings");
  assert.equal((await calls[0].init.body.get("audio").arrayBuffer()).byteLength, 3);
  const url = api.streamUrl({ protocol: "https:", host: "rs.example:8443" },
    { accession: "ACC 1", issuer: "H", section: "impression", dictationId: "d-2" });
  assert.equal(url, "wss://rs.example:8443/api/v1/studies/ACC%201/dictations/stream?section=impression&issuer=H"
    + "&framing=offset&user=dr.%C3%A4&dictation_id=d-2");
});

test("a dictation's audio comes back as a blob, asked for as WAV with the times to 10 ms; a refusal is an ApiError", async () => {
  const { fetch, calls } = fakeFetch([{ body: "RIFF" }, { status: 410, body: { detail: "the dictation's audio is no longer stored" } }]);
  const api = new Api({ fetch });
  api.user = "dr.a";
  assert.deepEqual(await api.audio("d/1", 1.2345, 2), { blob: "RIFF" });
  assert.equal(calls[0].url, "/api/v1/dictations/d%2F1/audio?start=1.23&end=2.00");
  assert.equal(calls[0].init.headers.Accept, "audio/wav");
  assert.equal(calls[0].init.headers["X-Radservice-User"], "dr.a");
  await assert.rejects(api.audio("d1", 0, 1), (error) => error.status === 410 && /no longer stored/.test(error.message));
});
