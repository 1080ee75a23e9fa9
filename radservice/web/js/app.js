// The radiologists' page: sign-in, worklist, study and report editor, signing, deliveries.
// Everything goes through the HTTP API (api.js); text from the service is only ever set as
// textContent, never as HTML.
import { Api } from "./api.js";
import { DictationLink } from "./dictation.js";
import { Recorder } from "./recorder.js";
import { wordDiff } from "./diff.js";
import { poll } from "./poll.js";
import { align, audioSpan, nextSpan, pieces, sentenceAt, unsureSpans } from "./unsure.js";
import { HoldKey, MicButtons, TAP_MS } from "./controls.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");
const EDITORS = new Set(["radiologist", "resident", "editor"]);
const SIGNERS = new Set(["radiologist", "resident"]);
const FINAL_SIGNERS = new Set(["radiologist"]);
const DICTATORS = new Set(["radiologist", "resident"]);
const DICTATED_SECTIONS = ["findings", "impression"];
/** The longest stretch of audio one play asks for (s): a sentence, not a whole dictation. */
const MAX_PLAY_S = 30;
const STATUSES = [["", "Awaiting report"], ["scheduled", "Scheduled"], ["in_progress", "In progress"],
  ["dictated", "Dictated"], ["preliminary", "Preliminary"], ["final", "Final"], ["cancelled", "Cancelled"]];
const PRIORITIES = [["", "Any"], ["S", "STAT"], ["A", "ASAP"], ["R", "Routine"]];
const PRIORITY_WORDS = { S: "STAT", A: "ASAP", R: "routine" };
const state = { me: null, pollers: [], study: null, view: 0 };

const api = new Api({
  onSignedOut: (error) => {
    if (state.me) {
      showSignIn(/another user/.test(error.detail || "")
        ? "This browser has since been signed in as another user: sign in again. Text you had not saved is kept."
        : "Your session has ended: sign in again. Text you had not saved is kept and comes back.");
    }
  },
});

/** The person the page shows, also for the API client (it names them on every request). */
function setMe(me) {
  state.me = me;
  api.user = me ? me.username : null;
}

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function message(kind, text, ...extra) {
  return h("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text, ...extra);
}

function stopPollers() {
  for (const poller of state.pollers) poller.stop();
  state.pollers = [];
}

function keepPolling(task, every) {
  const poller = poll(task, {
    every,
    onError: (error, wait) => {
      if (error.offline) showConnection(`Connection lost: trying again in ${Math.round(wait / 1000)} s.`);
    },
    onRecovered: () => showConnection(null),
  });
  state.pollers.push(poller);
  return poller;
}

function showConnection(text) {
  connection.hidden = !text;
  connection.textContent = text || "";
}

function title(text) {
  document.title = `${text} · radservice`;
  const heading = h("h1", { tabindex: "-1" }, text);
  return heading;
}

function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) heading.focus();
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined,
    { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

function patientName(patient) {
  return [patient.family_name, patient.given_name].filter(Boolean).join(", ") || "(no name)";
}

function age(patient) {
  const parts = /^(\d{4})-(\d{2})-(\d{2})$/.exec(patient.birth_date || "");
  if (!parts) return "";
  // a calendar date, read as such (new Date("YYYY-MM-DD") is midnight UTC: a day early in the west)
  const [year, month, day] = [Number(parts[1]), Number(parts[2]) - 1, Number(parts[3])];
  const now = new Date();
  let years = now.getFullYear() - year;
  if (now < new Date(now.getFullYear(), month, day)) years -= 1;
  if (years >= 2 || patient.birth_date_precision === "year") return `${Math.max(years, 0)} y`;
  let months = (now.getFullYear() - year) * 12 + now.getMonth() - month - (now.getDate() < day ? 1 : 0);
  months = Math.max(months, 0);
  return months >= 1 ? `${months} mo` : `${Math.max(0, Math.floor((now - new Date(year, month, day)) / 864e5))} d`;
}

// ---------------------------------------------------------------- start, routing, header

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault(); // a hash would change the route
    main.focus();
  });
  document.getElementById("help-button").addEventListener("click", () => document.getElementById("help").showModal());
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", shortcuts);
  document.addEventListener("keyup", holdKeyUp);
  window.addEventListener("blur", () => holdKey && holdKey.cancel());
  try {
    setMe(await api.me());
  } catch (error) {
    if (error.signedOut) {
      showSignIn();
      return;
    }
    main.replaceChildren(message("error", `The service cannot be reached: ${error.message}. Reload to try again.`));
    return;
  }
  showUser();
  route();
}

function showUser() {
  const me = state.me;
  document.getElementById("who").textContent = me ? `${me.display_name || me.username} (${me.role})` : "";
  for (const id of ["sign-out", "help-button", "nav"]) document.getElementById(id).hidden = !me;
}

function route() {
  const dictation = state.study && state.study.dictation;
  if (dictation && dictation.holdsAudio && location.hash !== state.hash
      && !window.confirm("A dictation on this study is still recording or not delivered. Leave it? "
        + "(What reached the service is kept and offered again.)")) {
    history.replaceState(null, "", state.hash);
    return;
  }
  state.hash = location.hash;
  state.view += 1; // a view still loading for an earlier address must not draw over this one
  stopPollers();
  if (!state.me) {
    showSignIn();
    return;
  }
  const hash = location.hash || "#/";
  const study = hash.match(/^#\/study\/([^?]+)(?:\?(.*))?$/);
  if (study) {
    let accession;
    try {
      accession = decodeURIComponent(study[1]);
    } catch {
      accession = study[1]; // a malformed escape in a typed address: shown as it is
    }
    // An accession number is unique only with its issuer: the worklist's links name it
    // (also when it is empty); a typed address without one works while the number is unique.
    const params = new URLSearchParams(study[2] || "");
    showStudy(accession, params.has("issuer") ? params.get("issuer") : null);
    return;
  }
  const query = hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "";
  showWorklist(Object.fromEntries(new URLSearchParams(query)));
}

async function signOut() {
  try {
    await api.signOut();
  } catch (error) {
    // signed out already, or offline: the page forgets the user either way
  }
  setMe(null);
  forgetUnsaved(() => true); // a shared workstation: nothing of the report stays in this tab
  showSignIn("You are signed out.");
}

// ---------------------------------------------------------------- sign-in

function showSignIn(text = "") {
  stopPollers();
  if (state.study) state.study.dispose();
  state.study = null;
  setMe(null);
  showUser();
  showConnection(null);
  const error = h("p", { id: "sign-in-message", class: "message error", role: "alert", hidden: !text }, text);
  if (text === "You are signed out.") error.className = "message ok";
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "signin", "aria-labelledby": "sign-in-title", novalidate: true },
    title("Sign in"), error,
    h("label", { for: "username" }, "Username", username),
    h("label", { for: "password" }, "Password", password),
    button);
  form.querySelector("h1").id = "sign-in-title";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!username.value.trim() || !password.value) {
      error.className = "message error";
      error.textContent = "Enter your username and password.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      const me = await api.signIn(username.value.trim(), password.value);
      setMe(await api.me()); // with the page's settings
      forgetUnsaved((user) => user !== me.username); // another person's kept text is not for this one
      showUser();
      route();
    } catch (failure) {
      error.className = "message error";
      error.textContent = failure.status === 401 ? "Wrong username or password." : failure.message;
      error.hidden = false;
      password.value = "";
      password.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(form);
  username.focus();
}

// ---------------------------------------------------------------- worklist

function showWorklist(filters) {
  state.study = null;
  const select = (id, label, options, value) => h("label", { for: id }, label,
    h("select", { id, name: id }, options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") },
      text))));
  const input = (id, label, value, extra = {}) => h("label", { for: id }, label,
    h("input", { id, name: id, value: value || "", ...extra }));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Worklist filters" },
    select("status", "Status", STATUSES, filters.status),
    input("modality", "Modality", filters.modality, { size: 6 }),
    select("priority", "Priority", PRIORITIES, filters.priority),
    input("q", "Search", filters.q, { type: "search", placeholder: "patient, ID, accession, procedure" }),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const query = new URLSearchParams(Object.entries(data).filter(([, v]) => v)).toString();
    location.hash = `#/${query ? `?${query}` : ""}`;
  });
  const body = h("tbody");
  const table = h("table", { class: "worklist" },
    h("caption", { class: "muted" }, "Studies, STAT first, then the oldest order first"),
    h("thead", {}, h("tr", {}, ["Priority", "Accession", "Patient", "Patient ID", "Age/Sex", "Modality",
      "Procedure", "Ordered", "Status"].map((name) => h("th", { scope: "col" }, name)))),
    body);
  const count = h("span", { class: "muted", role: "status" });
  const offset = Number(filters.offset || 0);
  const previous = h("button", { type: "button", disabled: offset === 0 }, "Previous page");
  const next = h("button", { type: "button", disabled: true }, "Next page");
  const page = (to) => {
    const query = new URLSearchParams({ ...filters, offset: String(to) });
    if (to === 0) query.delete("offset");
    location.hash = `#/?${query}`;
  };
  previous.addEventListener("click", () => page(Math.max(0, offset - 50)));
  const problem = h("div");
  main.replaceChildren(title("Worklist"), form, problem, table, h("div", { class: "pager" }, previous, next, count));
  focusHeading();

  let shown = "";
  const load = async () => {
    let data;
    try {
      data = await api.worklist({ status: filters.status, modality: filters.modality, priority: filters.priority,
        q: filters.q, offset, limit: 50 }, { background: shown !== "" });
    } catch (error) {
      if (error.status === 422) problem.replaceChildren(message("error", error.message));
      throw error;
    }
    problem.replaceChildren();
    const fingerprint = JSON.stringify(data);
    if (fingerprint === shown) return; // nothing changed: the rows, focus and scroll stay as they are
    shown = fingerprint;
    const focusedKey = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.key : undefined;
    body.replaceChildren(...data.items.map(row));
    if (!data.items.length) {
      body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No studies match.")));
    }
    if (focusedKey) {
      const again = body.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
    }
    count.textContent = `${data.offset + 1}–${data.offset + data.items.length} of ${data.total}`
      + `${data.total_is_exact ? "" : "+"}`;
    if (!data.items.length) count.textContent = "0 studies";
    next.disabled = data.next_offset === null;
    next.onclick = () => page(data.next_offset);
  };
  load().catch(() => {});
  keepPolling(load, 5000);
}

function row(study) {
  const link = h("a", { href: studyHref(study.accession_number, study.accession_issuer),
    "data-key": `${study.accession_issuer}|${study.accession_number}` }, study.accession_number);
  return h("tr", { class: study.priority === "S" ? "stat" : "" },
    h("td", {}, PRIORITY_WORDS[study.priority] || study.priority),
    h("td", {}, link),
    h("td", {}, patientName(study.patient)),
    h("td", {}, study.patient.patient_id),
    h("td", {}, [age(study.patient), study.patient.sex].filter(Boolean).join(" / ")),
    h("td", {}, study.modality),
    h("td", {}, study.procedure_text || study.procedure_code),
    h("td", {}, when(study.ordered_at)),
    h("td", {}, study.status.replace("_", " ")));
}

// ---------------------------------------------------------------- study and report

/** The page's address of a study; the issuer is always named, "" included. */
function studyHref(accession, issuer) {
  return `#/study/${encodeURIComponent(accession)}?${new URLSearchParams({ issuer: issuer ?? "" })}`;
}

const UNSAVED = "radservice.unsaved.";
/** Text not saved yet, kept per user and study (issuer and accession) until the PATCH that carries it succeeds. */
const unsavedKey = (study) => [UNSAVED + encodeURIComponent(state.me.username),
  encodeURIComponent(study.accession_issuer), encodeURIComponent(study.accession_number)].join("|");

function forgetUnsaved(whose) {
  for (let i = sessionStorage.length - 1; i >= 0; i -= 1) {
    const key = sessionStorage.key(i);
    if (key && key.startsWith(UNSAVED) && whose(decodeURIComponent(key.slice(UNSAVED.length).split("|")[0]))) {
      sessionStorage.removeItem(key);
    }
  }
}

async function showStudy(accession, issuer) {
  const view = state.view;
  const current = () => view === state.view;
  main.replaceChildren(title(`Study ${accession}`), h("p", { class: "muted" }, "Loading…"));
  focusHeading();
  let study;
  try {
    study = await api.study(accession, issuer);
  } catch (error) {
    if (error.signedOut || !current()) return;
    main.replaceChildren(title(`Study ${accession}`), message("error", error.message),
      h("p", {}, h("a", { href: "#/" }, "Back to the worklist")));
    focusHeading();
    return;
  }
  let report = null;
  if (study.report_id) {
    try {
      report = await api.report(study.report_id);
    } catch (error) {
      if (error.signedOut || !current()) return;
      main.append(message("error", error.message));
      return;
    }
  }
  if (!current()) return;
  if (issuer === null) {
    // a typed address without the issuer: name it now, so a reload finds this same study
    history.replaceState(null, "", studyHref(study.accession_number, study.accession_issuer));
  }
  new StudyPage(study, report).render();
}

class StudyPage {
  constructor(study, report) {
    this.study = study;
    this.report = report;
    this.dirty = new Set();
    this.saving = null;
    this.timer = null;
    this.accepted = new Set();
    state.study = this;
  }

  dispose() {
    clearTimeout(this.timer);
    this.disposed = true;
    this.stopPlaying(); // no patient's voice goes on after the study is left (or the session ends)
    if (this.dictation) this.dictation.abandon();
  }

  get canEdit() {
    return EDITORS.has(state.me.role) && (!this.report || this.report.status === "draft")
      && this.study.status !== "cancelled";
  }

  titles() {
    if (this.report) return this.report.section_titles;
    return this.study.template_sections || [];
  }

  render() {
    const study = this.study;
    const patient = study.patient;
    const field = (label, value) => h("div", {}, h("span", {}, label), value || "—");
    this.statusField = h("span", { class: "value" }, study.status.replace("_", " "));
    const header = h("section", { class: "study-header", "aria-label": "Study" },
      field("Patient", patientName(patient)),
      field("Patient ID", patient.patient_id),
      field("Born / sex", [patient.birth_date, age(patient), patient.sex].filter(Boolean).join(" · ")),
      field("Accession", study.accession_number),
      field("Procedure", study.order.procedure_text || study.order.procedure_code),
      field("Reason for the study", study.order.reason),
      field("Ordering physician", study.order.ordering_physician),
      field("Priority", PRIORITY_WORDS[study.order.priority] || study.order.priority),
      h("div", {}, h("span", {}, "Status"), this.statusField));
    this.notice = h("div", { "aria-live": "polite" });
    this.saveState = h("span", { class: "save-state", role: "status" });
    this.sections = h("div", { class: "sections" });
    this.actions = h("div", { class: "actions" });
    this.side = h("div", { class: "side" });
    this.dictation = DICTATORS.has(state.me.role) && this.canEdit ? new DictationControls(this) : null;
    main.replaceChildren(title(`Study ${study.accession_number}`), header, this.notice,
      h("div", { class: "editor" },
        h("section", { "aria-label": "Report" }, h("h2", {}, "Report ", this.saveState),
          this.dictation ? this.dictation.element : "", this.sections, this.actions),
        this.side));
    focusHeading();
    this.renderReport();
    this.restoreUnsaved();
    keepPolling(() => this.refreshSide(), 2000);
  }

  renderReport() {
    const report = this.report;
    const editable = this.canEdit;
    const texts = report ? report.sections : {};
    this.areas = {};
    this.unsureParts = {};
    this.spans = {};
    const sections = this.titles().map(({ key, title: label }) => {
      const id = `section-${key}`;
      const area = h("textarea", { id, name: key, readonly: !editable, spellcheck: "true" });
      area.value = texts[key] || "";
      area.addEventListener("input", () => {
        this.edited(key);
        this.showUnsureSoon(key);
      });
      area.addEventListener("blur", () => { if (this.dirty.size) this.save(); });
      // a click on a word to check selects all of it, ready to be typed over
      // (strictly inside: a click at its edge places the cursor there, to type next to it)
      area.addEventListener("click", (event) => {
        if (event.detail !== 1 || event.shiftKey || event.ctrlKey || event.altKey || event.metaKey) return;
        const at = area.selectionStart;
        if (at !== area.selectionEnd) return;
        const span = (this.spans[key] || []).find((s) => s.start < at && at < s.end);
        if (span && area.value.slice(span.start, span.end) === span.word) area.setSelectionRange(span.start, span.end);
      });
      this.areas[key] = area;
      // the unsure words are highlighted in place by a copy of the text drawn behind the
      // (transparent) text area; the list under it is the way to them for keyboard and screen reader
      const backdrop = h("div", { class: "backdrop", "aria-hidden": "true" });
      const list = h("div", { class: "unsure-list" });
      this.unsureParts[key] = { backdrop, list };
      const section = h("div", { class: "section", "data-section": key }, h("label", { for: id }, label),
        h("div", { class: "field" }, backdrop, area), list);
      return section;
    });
    this.sections.replaceChildren(...sections);
    for (const key of Object.keys(this.areas)) this.showUnsure(key);
    if (!sections.length) this.sections.append(h("p", { class: "muted" }, "No report template for this study."));
    this.saveState.textContent = report ? `${report.status}, version ${report.version}` : "not started";
    this.renderActions();
    this.renderNotes();
  }

  renderActions(force = true) {
    const report = this.report;
    const role = state.me.role;
    const shape = `${report ? report.status : "none"}:${role}`;
    if (!force && shape === this.actionsShape) return; // an autosave must not rebuild the buttons
    this.actionsShape = shape;
    const buttons = [];
    if (this.canEdit && report) {
      if (SIGNERS.has(role)) {
        buttons.push(h("button", { type: "button", id: "sign-preliminary", onclick: () => this.sign("preliminary") },
          "Sign preliminary"));
      }
      if (FINAL_SIGNERS.has(role)) {
        buttons.push(h("button", { type: "button", class: "primary", id: "sign-final",
          onclick: () => this.sign("final") }, "Sign final"));
      }
      if (this.areas.impression) {
        buttons.push(h("button", { type: "button", onclick: () => this.suggest() }, "Suggest impression"));
      }
    }
    if (report && report.status === "preliminary" && FINAL_SIGNERS.has(role)) {
      buttons.push(h("button", { type: "button", class: "primary", id: "sign-final",
        onclick: () => this.sign("final") }, "Sign final"));
    }
    if (report && ["final", "amended"].includes(report.status) && FINAL_SIGNERS.has(role)) {
      const text = h("textarea", { id: "addendum-text", rows: 3 });
      const add = h("button", { type: "button", onclick: () => this.addendum(text) }, "Add addendum");
      buttons.push(h("div", { class: "section" }, h("label", { for: "addendum-text" }, "Addendum"), text, add));
    }
    this.actions.replaceChildren(...buttons);
  }

  renderNotes() {
    const report = this.report;
    const parts = [];
    if (report && report.refinement && report.refinement.startsWith("rules-only:")) {
      parts.push(message("warn", `The LLM's text was not used: ${report.refinement.slice(11).trim()}`));
    }
    for (const dictation of this.study.dictations || []) {
      if (dictation.status === "failed") {
        parts.push(message("error", `A ${dictation.section} dictation failed: ${dictation.error || "no reason given"}`));
      } else if (dictation.status === "interrupted" && this.dictation) {
        // a reload or a closed tab while recording: what reached the service is kept, offered here
        const button = h("button", { type: "button", onclick: async () => {
          button.disabled = true;
          try {
            await api.transcribe(dictation.dictation_id);
            button.replaceWith("Transcribing…");
            this.dictation.awaitDraft(dictation.dictation_id);
          } catch (error) {
            button.disabled = false;
            if (!error.signedOut) this.notice.replaceChildren(message("error", `Not transcribed: ${error.message}`));
          }
        } }, "Transcribe it");
        parts.push(message("warn", `A ${dictation.section} dictation was interrupted before Stop and is not in `
          + "the report: ", button));
      }
    }
    const notes = report ? report.refinement_notes : [];
    if (notes.length) {
      parts.push(h("details", { class: "notes" },
        h("summary", {}, `What the rules and the LLM changed (${notes.length})`),
        h("ul", {}, notes.map((note) => h("li", {}, h("strong", {}, `${note.rule}: `),
          h("span", { class: "diff" }, wordDiff(note.before, note.after).map((part) => (part.op === "same"
            ? part.text : h(part.op, {}, part.text)))))))));
    }
    this.side.replaceChildren(...parts, this.deliveriesRegion());
  }

  /** The dictated words of a section, in order, each with an id that stays the same across renders. */
  dictatedWords(key) {
    const words = [];
    for (const dictation of this.study.dictations || []) {
      if (dictation.section !== key) continue;
      (dictation.words || []).forEach((word, i) => words.push({ id: `${dictation.dictation_id}:${i}`,
        dictation: dictation.dictation_id, word: word.word, probability: word.probability,
        start: word.start, end: word.end }));
    }
    return words;
  }

  /** Highlight the words the transcriber was unsure of, until they are edited away or accepted. */
  showUnsure(key) {
    const area = this.areas[key];
    const parts = this.unsureParts[key];
    if (!area || !parts) return;
    const text = area.value;
    const spans = this.canEdit ? unsureSpans(text, this.dictatedWords(key), this.accepted) : [];
    this.spans[key] = spans;
    // the trailing space keeps the copy as tall as the text area when the text ends with a new line
    parts.backdrop.replaceChildren(...pieces(text, spans).map((piece) => (piece.mark
      ? h("mark", {}, piece.text) : document.createTextNode(piece.text))), document.createTextNode(" "));
    this.fit(area);
    if (!spans.length) {
      parts.list.replaceChildren();
      return;
    }
    parts.list.replaceChildren(h("p", { class: "muted", "data-unsure": key }, "Words to check: ",
      spans.map((span) => h("span", { class: "unsure-word" },
        h("button", { type: "button", class: "link", "aria-label": `Select “${span.word}” in the text`,
          onclick: () => {
            area.focus();
            area.setSelectionRange(span.start, span.end);
          } }, h("mark", { class: "unsure" }, span.word)), " ",
        h("button", { type: "button", "aria-label": `Play “${span.word}”`, onclick: () => this.play(key, span.start, span.end) },
          "Play"), " ",
        h("button", { type: "button", "aria-label": `Accept “${span.word}”`, onclick: () => {
          this.accepted.add(span.id);
          this.showUnsure(key);
          area.focus();
        } }, "Accept"), " "))));
  }

  /** Select the next word to check after the caret in a section (Alt+N). */
  nextUnsure(key) {
    const area = this.areas[key];
    this.showUnsure(key); // the marks as the text is now (typing redraws them late in a long text)
    const span = nextSpan(this.spans[key] || [], area.selectionEnd);
    if (span) area.setSelectionRange(span.start, span.end);
    else this.notice.replaceChildren(message("ok", "No words to check in this section."));
  }

  /** Play the dictated audio of the text from ``from`` to ``to`` in a section (a caret: its word). */
  async play(key, from, to, { sentence = false } = {}) {
    const area = this.areas[key];
    if (sentence) ({ start: from, end: to } = sentenceAt(area.value, from));
    const span = audioSpan(align(area.value, this.dictatedWords(key)), from, to);
    if (!span) {
      this.notice.replaceChildren(message("warn", "No dictated audio here: the words were typed."));
      return;
    }
    // a little before and after: a word's times are tight, and its first sound is easily cut
    const start = Math.max(0, span.start - 0.15);
    const end = Math.min(span.end + 0.15, start + MAX_PLAY_S);
    const asked = (this.playAsked || 0) + 1;
    this.playAsked = asked; // only the latest ask plays: an earlier answer arriving late is dropped
    try {
      const audio = await api.audio(span.dictation, start, end);
      if (asked !== this.playAsked || this.disposed) return;
      this.stopPlaying();
      const player = new Audio(URL.createObjectURL(audio));
      this.playing = player;
      const words = area.value.slice(from, to).trim() || "the word";
      player.addEventListener("playing", () => {
        this.notice.replaceChildren(message("ok", `Playing “${words.length > 60 ? `${words.slice(0, 60)}…` : words}” `
          + `(${(end - start).toFixed(1)} s)`));
      });
      player.addEventListener("ended", () => {
        URL.revokeObjectURL(player.src);
        if (this.playing === player) this.notice.replaceChildren();
      });
      await player.play();
    } catch (error) {
      if (asked === this.playAsked && !error.signedOut && !this.disposed) {
        this.notice.replaceChildren(message("error", `Not played: ${error.message}`));
      }
    }
  }

  stopPlaying() {
    if (!this.playing) return;
    this.playing.pause();
    URL.revokeObjectURL(this.playing.src);
    this.playing = null;
  }

  /** While typing: at once for a dictation of usual length; for a long one the copy behind the
   * text follows at once without marks, and the marks after a pause (the alignment is n x m). */
  showUnsureSoon(key) {
    const parts = this.unsureParts[key];
    if (!parts) return;
    clearTimeout(parts.timer);
    const cells = this.dictatedWords(key).length * (this.areas[key].value.length / 6);
    if (cells < 250_000) {
      this.showUnsure(key);
      return;
    }
    parts.backdrop.replaceChildren(document.createTextNode(`${this.areas[key].value} `));
    this.fit(this.areas[key]);
    parts.timer = setTimeout(() => this.showUnsure(key), 200);
  }

  /** The text area grows with its text (no scroll bar: the highlighted copy behind it stays aligned). */
  fit(area) {
    area.style.height = "auto";
    area.style.height = `${area.scrollHeight + 2}px`;
  }

  deliveriesRegion() {
    this.deliveryList = h("ul", { "aria-live": "polite" });
    this.deliveriesShown = "";
    const region = h("section", { class: "deliveries", role: "region", "aria-labelledby": "deliveries-title" },
      h("h2", { id: "deliveries-title", tabindex: "-1" }, "Deliveries"), this.deliveryList);
    region.hidden = !this.report || this.report.status === "draft";
    this.deliveriesSection = region;
    return region;
  }

  async refreshSide() {
    if (!this.report || this.report.status === "draft") return;
    if (this.deliveredVersion === this.report.version) return; // every destination acked: nothing moves
    const rows = await api.deliveries(this.report.report_id, { background: true });
    this.deliveriesSection.hidden = false;
    const latest = Math.max(0, ...rows.map((r) => r.version));
    const current = rows.filter((r) => r.version === latest);
    if (current.length && current.every((r) => r.status === "acked") && latest === this.report.version) {
      this.deliveredVersion = latest;
    }
    const shown = JSON.stringify(current.map((r) => [r.destination, r.status, r.attempts, r.last_error]));
    if (shown === this.deliveriesShown) return; // announced only when something changed
    this.deliveriesShown = shown;
    this.deliveryList.replaceChildren(...rows.filter((r) => r.version === latest).map((r) => h("li", {},
      `${r.destination.toUpperCase()}: `,
      h("span", { class: `status-${r.status}` }, r.status),
      r.status === "failed" || (r.status === "pending" && r.attempts) ? ` (attempt ${r.attempts}: ${r.last_error})`
        : "")));
    if (!rows.length) this.deliveryList.append(h("li", { class: "muted" }, "none yet"));
  }

  // ---- editing and saving

  edited(key) {
    this.dirty.add(key);
    this.saveState.textContent = "editing…";
    this.keepUnsaved();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.save(), 1200);
  }

  keepUnsaved() {
    const texts = {};
    for (const key of this.dirty) texts[key] = this.areas[key].value;
    sessionStorage.setItem(unsavedKey(this.study), JSON.stringify({
      revision: this.report ? this.report.revision : null, sections: texts }));
  }

  restoreUnsaved() {
    const kept = sessionStorage.getItem(unsavedKey(this.study));
    if (!kept || !this.canEdit) return;
    let data;
    try { data = JSON.parse(kept); } catch { return; }
    for (const [key, text] of Object.entries(data.sections || {})) {
      if (!this.areas[key]) continue;
      this.areas[key].value = text;
      this.showUnsure(key);
      this.dirty.add(key);
    }
    if (this.dirty.size) {
      this.keptRevision = data.revision;
      this.restored = true;
      this.notice.replaceChildren(message("warn", "Text you had not saved is back; it is being saved now."));
      this.save();
    }
  }

  async save() {
    clearTimeout(this.timer);
    while (this.saving) await this.saving; // one PATCH at a time: the next one carries the new revision
    if (this.disposed || this.conflicted) return false;
    if (!this.dirty.size) return true;
    this.saving = this.saveNow();
    try {
      return await this.saving;
    } finally {
      this.saving = null;
    }
  }

  async saveNow() {
    try {
      if (!this.report) {
        // the draft may have been made meanwhile (a dictation, another person): what was typed
        // here is based on the empty draft (revision 1), so any change since is a conflict
        this.report = await api.draftReport(this.study.accession_number, this.study.accession_issuer);
        if (this.keptRevision === undefined) this.keptRevision = 1;
      }
      const changed = {};
      for (const key of this.dirty) changed[key] = this.areas[key].value;
      const sent = new Set(this.dirty);
      const revision = this.keptRevision === undefined ? this.report.revision : (this.keptRevision ?? 1);
      this.saveState.textContent = "saving…";
      const report = await api.edit(this.report.report_id, changed, revision);
      this.keptRevision = undefined;
      for (const key of sent) if (this.areas[key].value === changed[key]) this.dirty.delete(key);
      this.report = report;
      if (this.dirty.size) this.keepUnsaved();
      else sessionStorage.removeItem(unsavedKey(this.study));
      this.saveState.textContent = `draft saved, version ${report.version}`;
      this.notice.replaceChildren(...(this.restored ? [message("ok", "Text you had not saved is back, and saved.")]
        : []));
      this.restored = false;
      this.renderActions(false);
      return true;
    } catch (error) {
      if (error.signedOut) return false;
      if (error.offline) {
        this.saveState.textContent = "not saved (offline): kept here, saving again shortly";
        this.timer = setTimeout(() => this.save(), 5000);
        return false;
      }
      if (error.conflict) {
        this.conflict(error);
        return false;
      }
      this.saveState.textContent = "not saved";
      this.notice.replaceChildren(message("error", `Not saved: ${error.message}`));
      return false;
    }
  }

  conflict(error) {
    // no more saving over the other change until the person has looked at it
    this.conflicted = true;
    clearTimeout(this.timer);
    this.saveState.textContent = "not saved: conflict";
    const reload = h("button", { type: "button", onclick: async () => {
      while (this.saving) await this.saving; // a save still on its way answers first
      // the person's own text stays on the page (read-only, to copy from) after the current loads
      const titles = Object.fromEntries(this.titles().map((t) => [t.key, t.title]));
      const mine = [...this.dirty].map((key) => [titles[key] || key, this.areas[key].value]);
      sessionStorage.removeItem(unsavedKey(this.study));
      this.dirty.clear();
      this.keptRevision = undefined;
      try {
        this.report = await api.report(this.report.report_id);
      } catch (failure) {
        if (!failure.signedOut) this.notice.replaceChildren(message("error", failure.message));
        return;
      }
      this.conflicted = false;
      this.renderReport();
      const kept = mine.map(([label, text], n) => h("div", { class: "section" },
        h("label", { for: `mine-${n}` }, `Your ${label} (not saved)`),
        Object.assign(h("textarea", { id: `mine-${n}`, readonly: true, rows: 3 }), { value: text })));
      this.notice.replaceChildren(message("ok", "The current text is loaded."), ...kept);
    } }, "Load the current text");
    const signed = /not a draft|signed|final|preliminary/i.test(error.message);
    const words = signed
      ? "This report was signed in the meantime: your edits were not saved. "
      : "This report was changed elsewhere (another tab or person) since you opened it: your text was not "
        + "saved and is kept here. ";
    this.notice.replaceChildren(message("error", words, reload));
  }

  // ---- signing, addenda, suggestions

  async sign(kind) {
    if (!(await this.save())) return;
    if (!this.report) return;
    try {
      this.report = await api.sign(this.report.report_id, kind, this.report.revision);
      sessionStorage.removeItem(unsavedKey(this.study));
      this.study = await api.study(this.study.accession_number, this.study.accession_issuer);
      this.statusField.textContent = this.study.status.replace("_", " ");
      this.renderReport();
      this.notice.replaceChildren(message("ok", `Signed ${kind}, version ${this.report.version}.`));
      this.refreshSide().catch(() => {});
      this.deliveriesSection.querySelector("h2").focus();
    } catch (error) {
      if (error.signedOut) return;
      if (error.conflict) this.conflict(error);
      else this.notice.replaceChildren(message("error", `Not signed: ${error.message}`));
    }
  }

  async addendum(area) {
    if (!area.value.trim()) {
      this.notice.replaceChildren(message("error", "Write the addendum first."));
      return;
    }
    try {
      this.report = await api.addendum(this.report.report_id, area.value.trim());
      this.renderReport();
      this.notice.replaceChildren(message("ok", `Addendum signed, version ${this.report.version}.`));
      this.refreshSide().catch(() => {});
    } catch (error) {
      if (!error.signedOut) this.notice.replaceChildren(message("error", `Addendum not added: ${error.message}`));
    }
  }

  async suggest() {
    if (!(await this.save())) return;
    this.notice.replaceChildren(message("warn", "Asking for a suggested impression…"));
    try {
      const answer = await api.suggestImpression(this.report.report_id);
      if (!answer.suggestion) {
        this.notice.replaceChildren(message("warn", `No suggestion: ${answer.reason || "none was made"}`));
        return;
      }
      const accept = h("button", { type: "button", onclick: () => {
        this.areas.impression.value = answer.suggestion;
        this.showUnsure("impression");
        this.edited("impression");
        this.notice.replaceChildren();
        this.areas.impression.focus();
      } }, "Accept suggestion");
      const dismiss = h("button", { type: "button", onclick: () => this.notice.replaceChildren() }, "Dismiss");
      this.notice.replaceChildren(h("div", { class: "suggestion", role: "region",
        "aria-label": "Suggested impression" },
      h("p", {}, h("strong", {}, "Suggested impression (not in the report until you accept it): "),
        answer.suggestion), accept, " ", dismiss));
    } catch (error) {
      if (!error.signedOut) this.notice.replaceChildren(message("error", `No suggestion: ${error.message}`));
    }
  }
}

// ---------------------------------------------------------------- keyboard

// "?" is a single-character shortcut: the person can turn it off (WCAG 2.2 SC 2.1.4), kept in this browser
const QUESTION_KEY = "radservice.questionKey";
const questionKey = document.getElementById("question-key");
questionKey.checked = localStorage.getItem(QUESTION_KEY) !== "off";
questionKey.addEventListener("change", () => localStorage.setItem(QUESTION_KEY, questionKey.checked ? "on" : "off"));

function shortcuts(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (event.key === "?" && !typing && state.me && questionKey.checked) {
    event.preventDefault();
    document.getElementById("help").showModal();
    return;
  }
  if (event.altKey && !event.ctrlKey && (event.key === "w" || event.key === "W") && state.me) {
    event.preventDefault();
    location.hash = "#/";
    return;
  }
  const page = state.study;
  if (!page || !page.areas) return;
  if (page.dictation && isHoldKey(event, page)) {
    event.preventDefault();
    holdFor(page).down();
    return;
  }
  if (holdKey) holdKey.other(); // typing on while Space is down: that Space was typed
  if (page.dictation && event.key === (state.me.page?.record_key || "F4") && !event.repeat) {
    event.preventDefault();
    page.dictation.toggle();
    return;
  }
  const focused = focusedSection(page);
  if (event.altKey && !event.ctrlKey && focused && event.code === "KeyN") {
    event.preventDefault();
    page.nextUnsure(focused);
    return;
  }
  if (event.altKey && !event.ctrlKey && focused && event.code === "KeyL") {
    event.preventDefault();
    if (event.repeat) return; // a held key asks once
    const area = page.areas[focused];
    page.play(focused, area.selectionStart, area.selectionEnd, { sentence: event.shiftKey });
    return;
  }
  if (event.altKey && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
    event.preventDefault();
    moveSection(page, event.key === "ArrowDown" ? 1 : -1);
  } else if (event.ctrlKey && !event.altKey && (event.key === "s" || event.key === "S")) {
    event.preventDefault();
    page.save();
  } else if (event.ctrlKey && event.altKey && (event.key === "p" || event.key === "P")) {
    event.preventDefault();
    document.getElementById("sign-preliminary")?.focus(); // a signature is one more key: Enter
  } else if (event.ctrlKey && event.altKey && (event.key === "f" || event.key === "F")) {
    event.preventDefault();
    document.getElementById("sign-final")?.focus(); // a signature is one more key: Enter
  }
}

function focusedSection(page) {
  return Object.keys(page.areas).find((key) => page.areas[key] === document.activeElement);
}

/** The next (1) or previous (-1) report section gets the focus (the first when none has it). */
function moveSection(page, step) {
  const areas = Object.values(page.areas);
  const at = areas.indexOf(document.activeElement);
  const next = step > 0 ? Math.min(areas.length - 1, at + 1) : Math.max(0, at - 1);
  areas[at === -1 ? 0 : next]?.focus();
}

// ---- hold to talk ([web] hold_key)

let holdKey = null;
let holdPage = null;
let holdStarted = false;

/** Space is the hold key only where a space would be typed into a report section (or nowhere):
 * on a button or in another field it keeps its own meaning. */
function isHoldKey(event, page) {
  const key = state.me.page?.hold_key;
  if (!key || event.ctrlKey || event.altKey || event.metaKey) return false;
  if (event.isComposing || event.keyCode === 229) return false; // an input method's Space picks a candidate
  if (key !== "Space") return event.key === key;
  if (event.code !== "Space" || event.shiftKey) return false;
  const at = document.activeElement;
  return !at || at === document.body || Object.values(page.areas).includes(at);
}

function holdFor(page) {
  if (holdPage !== page) {
    if (holdKey) holdKey.cancel();
    holdPage = page;
    holdKey = new HoldKey({
      delayMs: state.me.page.hold_key === "Space" ? TAP_MS : 0,
      // a hold releases only what it started (not a recording begun with F4 or a microphone)
      onHold: () => {
        holdStarted = !page.dictation.recording;
        if (holdStarted) page.dictation.start();
      },
      onRelease: () => {
        if (holdStarted) page.dictation.release();
        holdStarted = false;
      },
      onTap: () => {
        const area = document.activeElement;
        if (!Object.values(page.areas).includes(area) || area.readOnly) return;
        // typed as if by the key: the text area's own undo and input event
        if (!document.execCommand("insertText", false, " ")) {
          area.setRangeText(" ", area.selectionStart, area.selectionEnd, "end");
          area.dispatchEvent(new Event("input", { bubbles: true }));
        }
      },
    });
  }
  return holdKey;
}

function holdKeyUp(event) {
  const page = state.study;
  if (!holdKey || !page || page !== holdPage || !page.areas) return;
  const key = state.me.page?.hold_key;
  // only a release of a press taken as the hold key: Space released on a button still clicks it
  if (holdKey.state !== "up" && (key === "Space" ? event.code === "Space" : event.key === key)) {
    event.preventDefault();
    holdKey.up();
  }
}

// ---- dictation microphones (Philips SpeechMike, Nuance PowerMic, foot controls) over WebHID

/** GoogleChromeLabs' dictation_support (npm), served from node_modules by the service. */
const MICS = { manager: null, loading: null, buttons: null, names: [] };

function loadMicSupport() {
  if (!navigator.hid) return Promise.resolve(null); // Chromium-based browsers only, on https or localhost
  if (!MICS.loading) {
    MICS.loading = new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = "/vendor/dictation_support.js";
      script.onload = () => resolve(globalThis.DictationSupport || null);
      script.onerror = () => resolve(null); // not installed: the keyboard and the buttons still work
      document.head.append(script);
    }).then(async (lib) => {
      if (!lib) return null;
      const manager = new lib.DictationDeviceManager(navigator.hid);
      MICS.buttons = new MicButtons(lib.ButtonEvent, {
        recording: () => Boolean(state.study?.dictation?.recording),
        start: () => state.study?.dictation?.start(),
        stop: () => state.study?.dictation?.release(),
        move: (step) => state.study?.areas && moveSection(state.study, step),
        play: () => {
          const page = state.study;
          const key = page && page.areas ? focusedSection(page) : null;
          if (key) page.play(key, page.areas[key].selectionStart, page.areas[key].selectionEnd, { sentence: true });
        },
      });
      // WebHID tells every tab that opened the device: only the one in front acts on a press
      // (a release still ends what this tab's press started)
      manager.addButtonEventListener((device, mask) => MICS.buttons.press(device, mask,
        document.visibilityState === "visible" && document.hasFocus()));
      manager.addDeviceConnectedEventListener(() => micsChanged());
      manager.addDeviceDisconnectedEventListener((device) => {
        MICS.buttons.forget(device);
        micsChanged();
      });
      try {
        await manager.init(); // devices allowed before (or by policy) connect at once
      } catch (error) {
        return null;
      }
      MICS.manager = manager;
      micsChanged();
      return manager;
    });
  }
  return MICS.loading;
}

function micsChanged() {
  MICS.names = MICS.manager ? MICS.manager.getDevices().map((device) => micName(device)) : [];
  state.study?.dictation?.showMics();
}

function micName(device) {
  const name = device.hidDevice && device.hidDevice.productName;
  return name || "dictation microphone";
}

start();

// ---------------------------------------------------------------- dictating on the page

const SILENCE_WARN_S = 5;

/** Record, Stop and Scratch that for the section that has the focus, with the live text in it. */
class DictationControls {
  constructor(page) {
    this.page = page;
    this.link = null;
    this.recorder = null;
    const key = state.me.page?.record_key || "F4";
    this.recordButton = h("button", { type: "button", id: "record", class: "primary", "aria-keyshortcuts": key,
      onclick: () => this.start() }, `Record (${key})`);
    this.stopButton = h("button", { type: "button", id: "stop", disabled: true, "aria-keyshortcuts": key,
      onclick: () => this.stop() }, "Stop");
    this.scratchButton = h("button", { type: "button", id: "scratch", disabled: true,
      onclick: () => this.scratch() }, "Scratch that");
    this.meter = h("meter", { min: "0", max: "1", value: "0", "aria-label": "Microphone level" });
    this.clock = h("span", { class: "elapsed", "aria-label": "Recording time" }, "0:00");
    this.status = h("p", { class: "dictation-status", role: "status" });
    this.micButton = h("button", { type: "button", id: "connect-mic", hidden: true,
      onclick: () => this.connectMic() }, "Connect dictation microphone");
    this.micStatus = h("span", { class: "mic-status muted" });
    this.element = h("div", { class: "dictation", role: "group", "aria-label": "Dictation" },
      this.recordButton, this.stopButton, this.scratchButton, this.meter, this.clock, this.micButton,
      this.micStatus, this.status);
    loadMicSupport().then(() => this.showMics());
  }

  /** The microphone button when the browser can talk to one; the connected ones by name. */
  showMics() {
    this.micButton.hidden = !MICS.manager;
    this.micStatus.textContent = MICS.names.length ? `Buttons of: ${MICS.names.join(", ")}` : "";
  }

  async connectMic() {
    if (!MICS.manager) return;
    try {
      await MICS.manager.requestDevice(); // the browser asks which device (a click is needed)
    } catch (error) {
      this.say(`No dictation microphone connected: ${error.message || error}`, "error");
    }
    micsChanged();
  }

  get active() {
    return this.link !== null && !["done", "failed", "offline"].includes(this.link.state);
  }

  /** A take is starting or being recorded (not one finishing after Stop). */
  get recording() {
    return Boolean(this.starting || (this.active && !this.link.stopWanted));
  }

  /** Stop, also while Record is still starting (a hold released during the save or the
   * microphone's prompt): the take stops as soon as it has started. */
  release() {
    if (this.starting) this.stopAfterStart = true;
    else if (this.recording) this.stop();
  }

  toggle() {
    if (this.active) this.stop();
    else this.start();
  }

  say(text, kind = "") {
    this.status.className = `dictation-status ${kind}`;
    this.status.replaceChildren(text);
  }

  /** The section that has the focus, when it can take a dictation; else Findings. */
  target() {
    const focused = document.activeElement && document.activeElement.name;
    if (DICTATED_SECTIONS.includes(focused) && this.page.areas[focused]) return focused;
    return DICTATED_SECTIONS.find((key) => this.page.areas[key]) || null;
  }

  async start() {
    if (this.starting) return;
    if (this.active) {
      if (this.link.stopWanted) this.say("Still finishing the last take: press Record again in a moment.", "warn");
      return;
    }
    this.stopAfterStart = false;
    const section = this.target();
    if (!section) {
      this.say("This report has no Findings or Impression to dictate into.", "error");
      return;
    }
    this.starting = true;
    this.finalSeen = false;
    this.uploaded = false;
    try {
      if (this.page.dirty.size && !(await this.page.save())) {
        this.say("Not recording: the text typed so far could not be saved first.", "error");
        return;
      }
      this.section = section;
      this.recorder = new Recorder({
        onChunk: (bytes) => this.link && this.link.push(bytes),
        onLevel: (level) => { this.meter.value = level; },
        onSilence: (seconds) => {
          if (!this.link || this.link.state !== "recording" || this.link.stopWanted) return; // other news first
          if (seconds >= SILENCE_WARN_S) this.say(`No sound from the microphone for ${Math.floor(seconds)} s: is it muted?`, "warn");
          else if (seconds === 0) this.recordingSaid();
        },
      });
      try {
        await this.recorder.start();
      } catch (error) {
        this.recorder = null;
        this.say(`Not recording: ${error.message}.`, "error");
        return;
      }
      const study = this.page.study;
      this.link = new DictationLink({
        open: ({ dictationId }) => new WebSocket(api.streamUrl(location, { accession: study.accession_number,
          issuer: study.accession_issuer, section, dictationId })),
        onChange: (linkState, reason) => this.changed(linkState, reason),
        onPartial: (partial) => this.partial(partial),
        onFinal: (event) => this.final(event),
        maxOfflineMs: (state.me.page?.max_offline_s || 120) * 1000,
      });
      this.showRecording(true);
      this.say("Connecting…");
    } finally {
      this.starting = false;
      if (this.stopAfterStart) {
        this.stopAfterStart = false;
        if (this.link) this.stop();
      }
    }
  }

  async stop() {
    if (!this.link || !this.active) return;
    this.stopButton.disabled = true;
    this.scratchButton.disabled = true;
    this.say("Finishing the text…");
    if (this.recorder) await this.recorder.finish();
    this.link.stop();
    this.releaseMicrophone();
  }

  async scratch() {
    if (!this.link || !this.recorder || this.scratching || this.link.stopWanted) return;
    this.scratching = true;
    this.scratchButton.disabled = true;
    try {
      await this.recorder.finish(); // the take's last chunk first, then the whole take goes
      if (!this.link.reset()) return; // Stop came meanwhile: the take stays and is finishing
      this.liveCommitted.textContent = "";
      this.liveTail.textContent = "";
      await this.recorder.restart(); // a new take needs its own header
      this.say("Scratched: recording again from here.");
    } finally {
      this.scratching = false;
      this.scratchButton.disabled = !this.active || this.link.stopWanted;
    }
  }

  recordingSaid() {
    const title = this.page.titles().find((t) => t.key === this.section);
    this.say(`Recording into ${title ? title.title : this.section}.`, "recording");
  }

  changed(linkState, reason) {
    const stopping = this.link && this.link.stopWanted;
    if (linkState === "recording" && !stopping) {
      this.recordingSaid();
      this.scratchButton.disabled = this.scratching;
    } else if (linkState === "stopping" || (linkState === "recording" && stopping)) {
      this.say("Finishing the text…");
    } else if (linkState === "reconnecting") {
      this.say(stopping ? "Connection lost: reconnecting to finish the text… Nothing is lost."
        : "Connection lost: reconnecting… Still recording; nothing is lost.", "warn");
    } else if (linkState === "offline") {
      this.offline();
    } else if (linkState === "failed" && !this.finalSeen) {
      this.releaseMicrophone();
      this.say(`Dictation stopped: ${reason}. The recording is kept on this page.`, "error");
      this.offerUpload();
      this.finished();
    }
  }

  /** Audio only this page holds: recording, or a recording not delivered (offline, refused). */
  get holdsAudio() {
    if (this.active) return true;
    return Boolean(this.link && this.link.recorded && ["offline", "failed"].includes(this.link.state)
      && !this.uploaded && !this.finalSeen);
  }

  partial({ committed, text }) {
    this.liveCommitted.textContent = committed;
    this.liveTail.textContent = text.startsWith(committed) ? text.slice(committed.length) : ` ${text}`;
  }

  async final(event) {
    this.finalSeen = true;
    this.releaseMicrophone();
    if (event.error) {
      this.say(`The dictation failed: ${event.error}`, "error");
      this.finished();
      return;
    }
    if (event.text) {
      this.liveCommitted.textContent = event.text;
      this.liveTail.textContent = "";
    }
    this.say("Final text ready; the report's draft follows…");
    this.finished(false);
    await this.awaitDraft(event.dictation_id || this.link.dictationId);
  }

  /** The draft job puts the dictation into the report: load it when it has (the person's own edits first). */
  async awaitDraft(dictationId) {
    const page = this.page;
    const deadline = Date.now() + 180000;
    while (!page.disposed && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      let study;
      try {
        study = await api.study(page.study.accession_number, page.study.accession_issuer);
      } catch (error) {
        if (error.signedOut) return;
        continue;
      }
      const dictation = (study.dictations || []).find((d) => d.dictation_id === dictationId);
      if (dictation && dictation.status === "failed") {
        this.say(`The dictation failed: ${dictation.error || "no reason given"}`, "error");
        this.removeLive();
        return;
      }
      if (!study.report_id) {
        this.say(`Transcribing… (${dictation ? dictation.status : "queued"})`);
        continue;
      }
      const report = await api.report(study.report_id).catch(() => null);
      // this dictation's own merge, not another's (an earlier take's accurate pass moves the revision too)
      if (!report || !(report.dictation_ids || []).includes(dictationId) || page.disposed) {
        if (dictation && !page.disposed) this.say(`Transcribing… (${dictation.status})`);
        continue;
      }
      if (this.active) continue; // a new recording is on: its section stays as it is until it ends
      page.study = study;
      if (page.dirty.size) {
        page.conflict(new Error("the dictation changed the report"));
        return;
      }
      page.report = report;
      page.renderReport();
      this.removeLive();
      this.say("The dictation is in the report.", "ok");
      return;
    }
    if (!page.disposed) this.say("The report's draft is taking long: it appears here when it is ready.", "warn");
  }

  offline() {
    this.releaseMicrophone();
    this.say("The service could not be reached for too long. The recording is kept on this page: ", "error");
    this.offerUpload();
    this.finished();
  }

  offerUpload() {
    if (!this.link || !this.link.recorded) return;
    const link = this.link;
    const section = this.section;
    const button = h("button", { type: "button", onclick: async () => {
      button.disabled = true;
      try {
        const answer = await api.uploadDictation(this.page.study.accession_number, this.page.study.accession_issuer,
          section, link.recording());
        this.uploaded = true;
        window.removeEventListener("beforeunload", this.warnLeaving);
        this.say("The recording was uploaded and is being transcribed.", "ok");
        await this.awaitDraft(answer.dictation_id);
      } catch (error) {
        button.disabled = false;
        if (!error.signedOut) this.say(`Upload failed: ${error.message}. Try again when the service is back.`, "error");
        this.status.append(" ", button);
      }
    } }, "Upload the recording");
    this.status.append(" ", button);
  }

  showRecording(on) {
    const sectionElement = this.page.sections.querySelector(`[data-section="${this.section}"]`);
    if (on) {
      this.liveCommitted = h("span", { class: "committed" });
      this.liveTail = h("span", { class: "tail" });
      this.live = h("p", { class: "live", "aria-live": "off" }, this.liveCommitted, this.liveTail);
      if (sectionElement) {
        sectionElement.classList.add("recording");
        sectionElement.append(this.live);
        this.page.areas[this.section].readOnly = true; // edits wait for the final text
      }
      this.startedAt = Date.now();
      this.clockTimer = setInterval(() => {
        const seconds = Math.floor((Date.now() - this.startedAt) / 1000);
        this.clock.textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
      }, 500);
      window.addEventListener("beforeunload", this.warnLeaving);
    } else if (sectionElement) {
      sectionElement.classList.remove("recording");
      if (this.page.areas[this.section]) this.page.areas[this.section].readOnly = !this.page.canEdit;
    }
    this.recordButton.disabled = on;
    this.stopButton.disabled = !on;
    this.scratchButton.disabled = true;
  }

  warnLeaving = (event) => {
    if (this.holdsAudio) event.preventDefault();
  };

  /** Recording over (the live text stays until the draft replaces it, unless `clear`). */
  finished(clear = true) {
    clearInterval(this.clockTimer);
    this.meter.value = 0;
    this.showRecording(false);
    if (!this.holdsAudio) window.removeEventListener("beforeunload", this.warnLeaving);
    if (clear && this.link && this.link.state !== "failed" && this.link.state !== "offline") this.removeLive();
  }

  removeLive() {
    if (this.live) this.live.remove();
    this.live = null;
  }

  releaseMicrophone() {
    if (this.recorder) this.recorder.release();
    this.recorder = null;
  }

  /** The page is leaving (another study, sign-out): the service keeps what it has (interrupted). */
  abandon() {
    if (this.link) this.link.close();
    this.releaseMicrophone();
    clearInterval(this.clockTimer);
    window.removeEventListener("beforeunload", this.warnLeaving);
  }
}

