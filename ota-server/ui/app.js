// The fleet dashboard: one page drawn from the JSON API (/api/v1) with the session cookie.
// Every value shown goes in as text (textContent, never innerHTML), so a device id or a
// failure reason that holds markup is shown as typed. The API decides what a session may do;
// the page only hides the controls its role could not use.
"use strict";

const API = "/api/v1";
const POLL_MS = 2000;
let session = null; // {name, role, csrf, expires_at}
let timer = null;

// ---- DOM helpers -------------------------------------------------------------------------

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const short = (id) => (id ? String(id).slice(0, 12) : "—");
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
const enc = encodeURIComponent;

// ---- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; changing requests carry the session's CSRF token. */
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf;
  const r = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const e = (data && data.error) || {};
    if (r.status === 401 && path !== `${API}/session`) showSignIn();
    throw new ApiError(r.status, e.code || "http", e.message || `HTTP ${r.status}`);
  }
  return data;
}

// What each role may do, as the API allows it (the API checks again; this only hides buttons).
const can = {
  release: () => ["admin", "ci", "release"].includes(session.role),
  pause: () => ["admin", "release"].includes(session.role),
  admin: () => session.role === "admin",
};

// ---- session -----------------------------------------------------------------------------

function showSignIn() {
  session = null;
  stopPolling();
  generation++;
  $("sign-in").hidden = false;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("page").replaceChildren();
}

function signedIn(info) {
  session = info;
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("nav-admin").hidden = !can.admin();
  $("who").textContent = `${info.name} (${info.role})`;
  route();
}

async function start() {
  $("sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      const info = await api("POST", `${API}/session`, { token: $("token").value });
      $("token").value = "";
      signedIn(info);
    } catch (e) {
      $("sign-in-error").textContent = e.message;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    try {
      await api("DELETE", `${API}/session`);
    } finally {
      showSignIn();
    }
  });
  window.addEventListener("hashchange", route);
  try {
    signedIn(await api("GET", `${API}/session`));
  } catch {
    showSignIn();
  }
}

// ---- routing and polling -----------------------------------------------------------------

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

/** Which drawing of the page is current: an answer that arrives after the page changed
 *  (another link, an action) is dropped instead of drawn over the new page. */
let generation = 0;

/** Draws a page (its function returns the page's nodes) now, and again every POLL_MS while it
 *  is shown when `poll` (live rollouts). */
function show(draw, poll) {
  stopPolling();
  const mine = ++generation;
  const tick = async () => {
    try {
      const nodes = await draw();
      if (mine !== generation) return;
      $("page").replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
      $("page").dataset.updated = String(Date.now());
    } catch (e) {
      if (mine === generation && e.status !== 401) flash(e.message);
    }
    if (poll && session && mine === generation) timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function route() {
  if (!session) return;
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  $("page").dataset.page = parts[0] || "overview";
  switch (parts[0]) {
    case "release": return show(() => releasePage(parts[1], Number(parts[2])), true);
    case "images": return show(imagesPage, true);
    case "devices": return show(() => devicesPage(params), false);
    case "device": return show(() => devicePage(parts[1]), true);
    case "audit": return show(() => auditPage(params), false);
    case "admin": return show(adminPage, false);
    default: return show(overviewPage, true);
  }
}

function flash(message, ok) {
  let box = $("flash");
  if (!box) {
    box = h("p", { id: "flash" });
    $("main").prepend(box);
  }
  box.className = ok ? "ok" : "error";
  box.textContent = message;
}

/** Runs an action; shows its refusal (the API's message) or success. */
async function act(what, fn) {
  try {
    await fn();
    flash(`${what}: done`, true);
    route();
  } catch (e) {
    flash(`${what}: ${e.message}`);
  }
}

// ---- overview ----------------------------------------------------------------------------

/** Environments in promotion order: each after its upstream (dev → test → prod). */
function promotionOrder(envs) {
  const byName = new Map(envs.map((e) => [e.name, e]));
  const depth = (e, seen = new Set()) =>
    e.upstream && byName.has(e.upstream) && !seen.has(e.name)
      ? 1 + depth(byName.get(e.upstream), seen.add(e.name))
      : 0;
  return [...envs].sort((a, b) => depth(a) - depth(b) || a.name.localeCompare(b.name));
}

function stageText(r) {
  const pct = r.stages[r.stage] ?? 100;
  return `stage ${Math.min(r.stage + 1, r.stages.length)}/${r.stages.length} (${pct} %)`;
}

function progressBar(p) {
  const total = Math.max(p.devices, 1);
  const inProgress = Math.max(p.in_stage - p.confirmed - p.failed, 0);
  const seg = (cls, n, label) =>
    h("span", { class: `seg ${cls}`, style: null, "data-n": n, title: `${label}: ${n}` });
  const bar = h("div", { class: "bar" },
    seg("confirmed", p.confirmed, "confirmed"),
    seg("failed", p.failed, "failed"),
    seg("progress", inProgress, "in progress"));
  // Widths through the CSS object model (the policy forbids inline style attributes).
  const widths = [p.confirmed, p.failed, inProgress];
  [...bar.children].forEach((s, i) => { s.style.width = `${(100 * widths[i]) / total}%`; });
  return h("div", { class: "progress" }, bar,
    h("span", { class: "counts" },
      `${p.confirmed} confirmed · ${p.failed} failed · ${inProgress} in progress · ${p.devices} devices`));
}

function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state.toUpperCase());
}

function releaseActions(env, r) {
  const box = h("div", { class: "actions" });
  const base = `environments/${enc(env.name)}/releases/${r.sequence}`;
  if (can.pause() && r.state === "rolling")
    box.append(h("button", { class: "pause", onclick: () => act(`pause ${env.name}/${r.sequence}`, () => api("POST", `${base}/pause`)) }, "Pause"));
  if (can.pause() && r.state === "paused")
    box.append(h("button", { class: "resume", onclick: () => act(`resume ${env.name}/${r.sequence}`, () => api("POST", `${base}/resume`)) }, "Resume"));
  if (can.release() && env.server_holds_key && ["halted", "paused", "rolling", "completed"].includes(r.state))
    box.append(h("button", { class: "rollback", onclick: () => {
      if (confirm(`Roll ${r.board} in ${env.name} back to its previous image?`))
        act(`rollback ${env.name} ${r.board}`, () => api("POST", `environments/${enc(env.name)}/rollback`, { board: r.board }));
    } }, "Roll back"));
  return box;
}

async function overviewPage() {
  const envs = promotionOrder(await api("GET", "environments"));
  const sections = envs.map((env) => {
    const cards = env.current.map((r) =>
      h("div", { class: `card rollout state-${r.state}`, "data-env": env.name, "data-board": r.board, "data-state": r.state, "data-stage": r.stage },
        h("div", { class: "card-head" },
          h("strong", {}, r.board), " ",
          h("a", { href: `#/release/${enc(env.name)}/${r.sequence}` }, `v${r.version} · release #${r.sequence}`), " ",
          stateBadge(r.state)),
        r.state === "halted" || r.state === "paused"
          ? h("div", { class: `alarm state-${r.state}` }, `${r.state.toUpperCase()}${r.reason ? ": " + r.reason : ""}`)
          : null,
        h("div", {}, h("span", { class: "stage" }, stageText(r)), ` · image ${short(r.image_id)}`),
        progressBar(r.progress),
        releaseActions(env, r)));
    return h("section", { class: "env", "data-env": env.name },
      h("h2", {}, env.name, env.upstream ? h("small", {}, ` ← promoted from ${env.upstream}`) : null,
        h("small", {}, ` · ${env.devices} devices · key ${env.server_holds_key ? "on the server" : "offline"}`)),
      cards.length ? cards : h("p", { class: "muted" }, "nothing released yet"),
      releaseForm(env));
  });
  return [h("h1", {}, "Overview"), ...sections];
}

/** Releasing an image to an environment: directly where the server holds the key, else the
 *  `imager promote` command and a field for the statement it signs. */
function releaseForm(env) {
  if (!can.release()) return null;
  const image = h("input", { placeholder: "image id (64 hex digits)", size: 66, class: "image-id" });
  if (env.server_holds_key) {
    return h("form", { class: "release-form", onsubmit: (ev) => {
      ev.preventDefault();
      act(`release to ${env.name}`, () => api("POST", `environments/${enc(env.name)}/releases`, { image_id: image.value.trim() }));
    } }, image, h("button", { type: "submit" }, `Release to ${env.name}`));
  }
  const statement = h("textarea", { placeholder: "signed release statement (hex)", rows: 2, cols: 66 });
  const cmd = h("code", { class: "command" }, `imager promote IMAGE_ID --to ${env.name} --key ${env.name}.pem`);
  image.addEventListener("input", () => {
    cmd.textContent = `imager promote ${image.value.trim() || "IMAGE_ID"} --to ${env.name} --key ${env.name}.pem`;
  });
  return h("details", { class: "release-form" }, h("summary", {}, `Promote to ${env.name} (offline key)`),
    h("p", {}, "The server does not hold this environment's key. Run, where the key is:"), cmd,
    h("p", {}, "or paste the statement it signs:"),
    h("form", { onsubmit: (ev) => {
      ev.preventDefault();
      act(`promote to ${env.name}`, () => api("POST", `environments/${enc(env.name)}/releases`, { image_id: image.value.trim(), statement: statement.value.trim() }));
    } }, image, statement, h("button", { type: "submit" }, "Upload statement")));
}

// ---- release page ------------------------------------------------------------------------

async function releasePage(envName, seq) {
  const [r, env, audit, envs] = await Promise.all([
    api("GET", `environments/${enc(envName)}/releases/${seq}`),
    api("GET", `environments/${enc(envName)}`),
    api("GET", "audit?limit=1000"),
    api("GET", "environments"),
  ]);
  const target = `${envName}/${seq}`;
  const moves = audit.filter((a) => a.target === target || (a.action.startsWith("release") && a.detail && a.detail.sequence === seq && a.target.startsWith(envName))).reverse();
  const failed = await api("GET", `fleet/devices?environment=${enc(envName)}&board=${enc(r.board)}&state=failed&limit=100`);
  // Where the same image was released, in promotion order: the path it took.
  const path = [];
  for (const e of promotionOrder(envs)) {
    const rels = await api("GET", `environments/${enc(e.name)}/releases`);
    for (const x of rels.filter((x) => x.image_id === r.image_id)) path.push([e, x]);
  }
  return [
    h("h1", {}, `Release ${envName} #${seq}: ${r.board} v${r.version} `, stateBadge(r.state)),
    r.reason ? h("div", { class: `alarm state-${r.state}` }, r.reason) : null,
    h("p", {}, `image ${r.image_id} · ${r.kind} by ${r.created_by}, ${when(r.created_at)} · signed by key ${env.release_key_id}`),
    h("div", { class: "card" }, h("span", { class: "stage" }, stageText(r)), progressBar(r.progress), releaseActions(env, r)),
    h("h2", {}, "Stage timeline"),
    h("ol", { class: "timeline" },
      h("li", {}, `${when(r.created_at)} — released by ${r.created_by}`),
      moves.map((a) => h("li", {}, `${when(a.at)} — ${a.action} by ${a.actor}`,
        a.detail && a.detail.to ? ` → ${a.detail.to.state} stage ${a.detail.to.stage + 1}` : "",
        a.detail && a.detail.reason ? ` (${a.detail.reason})` : ""))),
    h("div", { class: "stages" }, r.stages.map((pct, i) =>
      h("span", { class: `stage-step ${i < r.stage ? "done" : i === r.stage ? "now" : ""}` }, `${pct} %`))),
    h("h2", {}, `Failures (${failed.total})`),
    table(["device", "failed image", "reason", "last seen"], failed.devices.map((d) => [
      h("a", { href: `#/device/${enc(d.id)}` }, d.id), short(d.failed_image), d.last_outcome || "", when(d.last_seen)])),
    h("h2", {}, "Promotion path"),
    h("ol", { class: "path" }, path.map(([e, x]) => h("li", {},
      `${e.name} #${x.sequence}: ${x.kind} by ${x.created_by}, ${when(x.created_at)}, signed by key ${e.release_key_id} — `,
      `${x.progress.confirmed} confirmed, ${x.progress.failed} failed, ${x.state}`)))];
}

// ---- images ------------------------------------------------------------------------------

async function imagesPage() {
  const [images, envs] = await Promise.all([api("GET", "images"), api("GET", "environments")]);
  const rows = [];
  for (const img of images) {
    const running = await api("GET", `fleet/devices?image=${img.id}&limit=1`);
    const where = envs.flatMap((e) => e.current.filter((r) => r.image_id === img.id).map((r) => `${e.name} #${r.sequence} (${r.state})`));
    rows.push([img.board, img.version, `${img.file_size} B`, img.security_counter, short(img.id),
      where.join(", ") || "—",
      h("a", { href: `#/devices?image=${img.id}` }, String(running.total))]);
  }
  return [h("h1", {}, "Images"), table(["board", "version", "size", "security counter", "id", "released in", "devices running it"], rows)];
}

// ---- devices -----------------------------------------------------------------------------

const STATES = ["", "unseen", "current", "updating", "waiting", "failed"];

async function devicesPage(params) {
  const envs = await api("GET", "environments");
  const boards = [...new Set(envs.flatMap((e) => e.current.map((r) => r.board)))];
  const pick = (name, options) => h("select", { name, id: `filter-${name}` },
    options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o || `any ${name}`)));
  const search = h("input", { name: "search", id: "filter-search", placeholder: "device id contains…", value: params.get("search") || "" });
  const image = h("input", { name: "image", id: "filter-image", placeholder: "image id", size: 20, value: params.get("image") || "" });
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value.trim());
    location.hash = `#/devices?${q}`;
  } },
  pick("environment", ["", ...envs.map((e) => e.name)]), pick("board", ["", ...boards]), pick("state", STATES),
  image, search, h("button", { type: "submit", id: "filter-apply" }, "Filter"));
  const limit = 50;
  const offset = Number(params.get("offset") || 0);
  const q = new URLSearchParams(params);
  q.set("limit", limit);
  q.set("offset", offset);
  const page = await api("GET", `fleet/devices?${q}`);
  const at = (o) => { const p = new URLSearchParams(params); p.set("offset", o); return `#/devices?${p}`; };
  const last = Math.min(offset + page.devices.length, page.total);
  return [h("h1", {}, "Devices"), form,
    h("p", { class: "pager" },
      offset > 0 ? h("a", { href: at(Math.max(offset - limit, 0)), id: "prev" }, "← previous") : null,
      h("span", { id: "page-info" }, ` ${page.total ? offset + 1 : 0}–${last} of ${page.total} `),
      last < page.total ? h("a", { href: at(offset + limit), id: "next" }, "next →") : null),
    table(["id", "environment", "board", "state", "running", "last outcome", "last seen"], page.devices.map((d) => [
      h("a", { href: `#/device/${enc(d.id)}`, class: "device-id" }, d.id), d.environment, d.board,
      h("span", { class: `badge dstate-${d.state}` }, d.state), short(d.running), d.last_outcome || "", when(d.last_seen)]))];
}

async function devicePage(id) {
  const { device: d, events } = await api("GET", `devices/${enc(id)}`);
  const slot = d.slot_b ? Object.entries(d.slot_b).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") : "empty";
  return [h("h1", {}, "Device ", h("span", { class: "device-id" }, d.id)),
    table(["", ""], [
      ["environment", d.environment], ["board", d.board], ["state", d.state],
      ["slot A (running)", `${d.running || "—"}${d.confirmed ? " (confirmed)" : " (on trial)"}`],
      ["slot B", slot], ["failed image", d.failed_image || "—"], ["last outcome", d.last_outcome || "—"],
      ["release", d.release_sequence ?? "—"], ["enrolled", when(d.enrolled_at)], ["last seen", when(d.last_seen)]]),
    h("h2", {}, "Events"),
    table(["at", "kind", "image", "detail"], events.map((e) => [when(e.at), e.kind, short(e.image_id), e.detail || ""]))];
}

// ---- audit and admin ---------------------------------------------------------------------

async function auditPage(params) {
  const before = params.get("before");
  const entries = await api("GET", `audit?limit=100${before ? `&before=${enc(before)}` : ""}`);
  const oldest = entries.length ? entries[entries.length - 1].seq : null;
  return [h("h1", {}, "Audit log"),
    table(["#", "at", "who", "role", "action", "target", "detail"], entries.map((a) => [
      a.seq, when(a.at), a.actor, a.role, a.action, a.target, JSON.stringify(a.detail)])),
    entries.length === 100 ? h("a", { href: `#/audit?before=${oldest}` }, "older →") : null];
}

async function adminPage() {
  if (!can.admin()) return [h("p", {}, "Only admin tokens manage tokens and enrollment.")];
  const tokens = await api("GET", "tokens");
  const envs = await api("GET", "environments");
  const name = h("input", { placeholder: "token name" });
  const role = h("select", {}, ["qa", "release", "ci", "admin"].map((r) => h("option", { value: r }, r)));
  const shown = h("p", { class: "secret" });
  const devId = h("input", { placeholder: "device id" });
  const board = h("input", { placeholder: "board (e.g. microbit)" });
  const env = h("select", {}, envs.map((e) => h("option", { value: e.name }, e.name)));
  const devShown = h("p", { class: "secret" });
  return [h("h1", {}, "Admin"),
    h("h2", {}, "Management tokens"),
    table(["id", "name", "role", "created", "", ""], tokens.map((t) => [t.id, t.name, t.role, when(t.created_at),
      t.revoked ? "revoked" : "",
      t.revoked ? "" : h("button", { onclick: () => act(`revoke ${t.name}`, () => api("DELETE", `tokens/${enc(t.id)}`)) }, "Revoke")])),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const made = await api("POST", "tokens", { name: name.value.trim(), role: role.value });
        shown.textContent = `New token (shown once): ${made.token}`;
      } catch (e) { flash(e.message); }
    } }, name, role, h("button", { type: "submit" }, "Create token")), shown,
    h("h2", {}, "Enroll a device"),
    h("p", {}, "For a factory line's thousands: imager device add --from-csv."),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const made = await api("POST", "devices", { id: devId.value.trim(), board: board.value.trim(), environment: env.value });
        devShown.textContent = `Device token (shown once): ${made.token}`;
      } catch (e) { flash(e.message); }
    } }, devId, board, env, h("button", { type: "submit" }, "Enroll")), devShown];
}

function table(head, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

document.addEventListener("DOMContentLoaded", start);
