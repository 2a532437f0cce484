// The dashboard: sign-in, an overview of every service and one page per service, kept live by the
// agent's event stream (stored events, each running flow's steps, the proxy's counters every 2 s).
import { h, render } from "./vendor/preact.mjs";
import { useEffect, useRef, useState } from "./vendor/hooks.mjs";
import htm from "./vendor/htm.mjs";

const html = htm.bind(h);

// ---- state: one object, replaced on every change; the page re-renders once per frame at most ----
let S = {
  session: undefined, // undefined: still asking; null: signed out
  signInError: "",
  status: null,
  statusError: "",
  history: {},
  migrations: {},
  flows: {}, // service -> { kind, release, via, from, plan, steps[], infos[], outcome, error, startedAt }
  rates: {}, // poolId -> { rps, errorRate, series: number[] }
  conn: "connecting",
  route: parseRoute(),
  dialog: null,
  now: Date.now(),
};
let frame = 0;
function set(patch) {
  S = { ...S, ...(typeof patch === "function" ? patch(S) : patch) };
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
}

function parseRoute() {
  const m = /^#\/services\/([^/]+)$/.exec(location.hash);
  return m ? { page: "service", name: decodeURIComponent(m[1]) } : { page: "overview" };
}
addEventListener("hashchange", () => {
  set({ route: parseRoute() });
  if (S.route.page === "service") loadService(S.route.name);
});

// ---- talking to the agent: same-origin fetch with the session cookie; the CSRF token on every change ----
class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && S.session) headers["x-csrf-token"] = S.session.csrf;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin", cache: "no-store" });
  if (res.status === 401 && path !== "/ui/session") signedOut("Your session ended (it expired, or its token was revoked): sign in again.");
  const type = res.headers.get("content-type") ?? "";
  if (type.includes("ndjson")) return res;
  const json = type.includes("json") ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

let stream = null;
function signedOut(message) {
  stream?.close();
  stream = null;
  set({ session: null, signInError: message ?? "", status: null, flows: {}, history: {}, migrations: {}, dialog: null });
}

async function start() {
  // Status is asked at once beside the session: a signed-in page draws after one round trip, not two.
  const status = fetch("/v1/status", { credentials: "same-origin", cache: "no-store" }).then((r) => (r.ok ? r.json() : null), () => null);
  try {
    const session = await api("GET", "/ui/session");
    const first = await status;
    set({ session, ...(first ? { status: first } : {}) });
    connected(!first);
  } catch {
    set({ session: null });
  }
}

async function signIn(token) {
  try {
    const session = await api("POST", "/ui/session", { token });
    set({ session, signInError: "" });
    connected();
  } catch (e) {
    set({ signInError: e.message });
  }
}

async function signOut() {
  try { await api("DELETE", "/ui/session"); } catch { /* signed out either way */ }
  signedOut("Signed out.");
}

function connected(readStatus = true) {
  if (readStatus) refreshStatus();
  if (S.route.page === "service") loadService(S.route.name);
  openStream();
}

// ---- the live stream: no polling; a stored event refreshes what it touches, progress draws steps ----
function openStream() {
  stream?.close();
  const es = new EventSource("/v1/events/stream?stats=1");
  stream = es;
  set({ conn: "connecting" });
  let opened = false;
  es.onopen = () => {
    set({ conn: "live" });
    // Whatever changed while the stream was down.
    if (opened) refreshStatus();
    opened = true;
  };
  es.onerror = () => {
    set({ conn: "reconnecting" });
    // A closed stream is often an ended session: ask, and sign out if so.
    if (es.readyState !== EventSource.CLOSED) return;
    api("GET", "/ui/session").then(
      () => setTimeout(openStream, 2000),
      (e) => (e.status === 401 ? signedOut("Your session ended (it expired, the agent restarted, or its token was revoked): sign in again.") : setTimeout(openStream, 5000)),
    );
  };
  es.addEventListener("progress", (m) => onProgress(JSON.parse(m.data)));
  es.addEventListener("stats", (m) => onStats(JSON.parse(m.data)));
  es.addEventListener("changed", () => refreshStatus());
  es.addEventListener("dropped", () => setTimeout(() => { openStream(); refreshStatus(); }, 1000));
  // The agent ended the stream because this session or its token ended: say why, without a reconnect that would only be refused.
  es.addEventListener("revoked", (m) => signedOut(`Your session ended (${String(JSON.parse(m.data).reason ?? "revoked").slice(0, 200)}): sign in again.`));
  es.onmessage = (m) => onEvent(JSON.parse(m.data));
  for (const type of STORED_TYPES) es.addEventListener(type, (m) => onEvent(JSON.parse(m.data)));
}
// SSE delivers named events only to listeners of that name: these are the ones the page reacts to.
const STORED_TYPES = [
  "deploy.started", "deploy.succeeded", "deploy.failed", "deploy.reverted", "deploy.stopped", "rollback.started", "rollback.succeeded", "rollback.failed",
  "rollback.reverted", "rollback.stopped", "check.changed", "check.back", "instance.exited", "instance.replaced", "instance.refused", "service.degraded", "service.held",
  "heal.failed", "heal.rollback", "heal.scheduled", "flip.reverted", "warm.expired", "migrate", "lock.lost", "recovered", "record.invalid", "proxy.restarted",
];

let statusBusy = false;
let statusAgain = false;
function refreshStatus() {
  // Events come in bursts (a deploy writes several): one read at a time, and one more after it if anything came meanwhile.
  if (statusBusy) return void (statusAgain = true);
  statusBusy = true;
  api("GET", "/v1/status").then(
    (status) => set({ status, statusError: "" }),
    (e) => { if (e.status !== 401) set({ statusError: e.message }); },
  ).finally(() => {
    statusBusy = false;
    if (statusAgain) {
      statusAgain = false;
      refreshStatus();
    }
  });
}

function onEvent(e) {
  refreshStatus();
  const svc = e.service;
  if (!svc) return;
  if (/^(deploy|rollback)\.(succeeded|failed|reverted|stopped)$/.test(e.type)) {
    const outcome = e.type.split(".")[1];
    set((s) => (s.flows[svc] ? { flows: { ...s.flows, [svc]: { ...s.flows[svc], outcome, message: e.message, finishedAt: e.at ?? Date.now() } } } : {}));
    loadHistory(svc);
    if (e.type.endsWith("succeeded")) loadMigrations(svc);
  } else if (e.type === "migrate") {
    loadMigrations(svc);
  }
}

function onProgress({ service, kind, at, progress: p }) {
  set((s) => {
    let f = s.flows[service];
    // The lock step starts every flow: a new flow replaces the last one shown.
    if (p.type === "step" && p.name === "lock" && p.status === "started") f = { kind, release: null, via: null, from: null, plan: [], steps: [], infos: [], outcome: "running", startedAt: at };
    if (!f) f = { kind, release: null, via: null, from: null, plan: [], steps: [], infos: [], outcome: "running", startedAt: at };
    f = { ...f };
    if (p.type === "plan") Object.assign(f, { release: p.release, via: p.via, from: p.from, plan: p.steps });
    else if (p.type === "info") f.infos = [...f.infos.slice(-4), p.message];
    else if (p.type === "progress") f.backfill = p;
    else if (p.type === "step") {
      const steps = [...f.steps];
      const i = steps.findLastIndex((x) => x.name === p.name && x.status === "started");
      const step = { name: p.name, status: p.status, durationMs: p.durationMs, detail: p.detail, at };
      if (p.status !== "started" && i >= 0) steps[i] = step;
      else steps.push(step);
      f.steps = steps;
      if (p.status === "done") f.backfill = undefined;
    }
    return { flows: { ...s.flows, [service]: f } };
  });
}

let lastStats = null;
function onStats(st) {
  if (st.error || !Array.isArray(st.pools)) return;
  const prev = lastStats;
  lastStats = st;
  if (!prev) return;
  const dt = (st.at - prev.at) / 1000;
  if (dt <= 0) return;
  const before = new Map(prev.pools.map((p) => [p.poolId, p]));
  const rates = {};
  for (const p of st.pools) {
    const b = before.get(p.poolId) ?? { served: 0, failed: 0, errors5xx: 0 };
    const n = Math.max(0, p.served + p.failed - b.served - b.failed);
    const bad = Math.max(0, p.failed - b.failed + (p.errors5xx ?? 0) - (b.errors5xx ?? 0));
    const series = [...(S.rates[p.poolId]?.series ?? []), n / dt].slice(-30);
    rates[p.poolId] = { rps: n / dt, errorRate: n ? bad / n : 0, inFlight: p.inFlight, series };
  }
  set({ rates });
}

async function loadService(name) {
  loadHistory(name);
  loadMigrations(name);
}
async function loadHistory(name) {
  try {
    const { history } = await api("GET", `/v1/services/${encodeURIComponent(name)}/history?limit=20`);
    set((s) => ({ history: { ...s.history, [name]: history } }));
  } catch (e) {
    set((s) => ({ history: { ...s.history, [name]: { error: e.message } } }));
  }
}
async function loadMigrations(name) {
  try {
    const m = await api("GET", `/v1/services/${encodeURIComponent(name)}/migrations`);
    set((s) => ({ migrations: { ...s.migrations, [name]: m } }));
  } catch (e) {
    set((s) => ({ migrations: { ...s.migrations, [name]: { error: e.message } } }));
  }
}

// ---- actions: the plan first, then a confirmation that names what will happen ----
async function askDeploy(service, release, via) {
  set({ dialog: { kind: "deploy", service, release, via, loading: true } });
  try {
    const plan = await api("POST", `/v1/services/${encodeURIComponent(service)}/plan`, { kind: "deploy", release, ...(via ? { via } : {}) });
    set({ dialog: { kind: "deploy", service, release, via, plan } });
  } catch (e) {
    set({ dialog: { kind: "deploy", service, release, via, error: e.message } });
  }
}
async function askRollback(service) {
  set({ dialog: { kind: "rollback", service, loading: true } });
  try {
    const plan = await api("POST", `/v1/services/${encodeURIComponent(service)}/plan`, { kind: "rollback" });
    set({ dialog: { kind: "rollback", service, plan } });
  } catch (e) {
    set({ dialog: { kind: "rollback", service, error: e.message } });
  }
}
async function run(d) {
  set({ dialog: null });
  const body = d.kind === "deploy" ? { release: d.release, ...(d.via ? { via: d.via } : {}), actor: "dashboard" } : { actor: "dashboard" };
  try {
    const res = await api("POST", `/v1/services/${encodeURIComponent(d.service)}/${d.kind}`, body);
    if (!(res instanceof Response)) return;
    // The steps arrive over the event stream; this answer only says how the flow ended.
    const text = await res.text();
    const last = text.trim().split("\n").map((l) => JSON.parse(l)).findLast((l) => l.type === "result");
    if (last && !last.ok) set((s) => ({ flows: { ...s.flows, [d.service]: { ...(s.flows[d.service] ?? { steps: [], infos: [], plan: [] }), kind: d.kind, outcome: "failed", error: last.error?.message } } }));
  } catch (e) {
    set((s) => ({ flows: { ...s.flows, [d.service]: { steps: [], infos: [], plan: [], kind: d.kind, outcome: "failed", error: e.message } } }));
  }
  loadHistory(d.service);
}

// ---- formatting ----
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Math.round((S.now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
function clock(t) {
  return t ? new Date(t).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}
function ms(n) {
  if (n === undefined || n === null) return "";
  return n < 1000 ? `${Math.round(n)}ms` : n < 60_000 ? `${(n / 1000).toFixed(1)}s` : `${Math.floor(n / 60_000)}m${Math.round((n % 60_000) / 1000)}s`;
}
function rate(n) {
  return n === undefined ? "–" : n < 10 ? n.toFixed(1) : String(Math.round(n));
}
function pct(n) {
  return n === undefined ? "–" : n === 0 ? "0%" : n < 0.001 ? "<0.1%" : `${(n * 100).toFixed(1)}%`;
}

// What state a service is in, worst first: the word and the colour go together everywhere.
function judge(svc, flow) {
  const live = svc.instances.filter((i) => i.slot === svc.color);
  const critical = live.filter((i) => i.health.status === "critical");
  const warning = live.filter((i) => i.health.status !== "passing" && i.health.status !== "critical");
  if (svc.degraded) return { tone: "bad", word: "degraded", why: svc.degraded.reason, since: svc.degraded.since };
  if (svc.color && live.length > 0 && critical.length === live.length) return { tone: "bad", word: "down", why: `every live instance is critical: ${lastOutput(critical[0])}` };
  if (critical.length) return { tone: "bad", word: "critical", why: `${critical.length} of ${live.length} live instance${live.length === 1 ? "" : "s"} critical: ${critical[0].id}: ${lastOutput(critical[0])}` };
  // The lock, not the page's memory of a flow, says one runs: a stream that missed the end of a flow cannot leave "deploying" up.
  if (svc.canary) return { tone: "info", word: `canary ${svc.canary.percent} %`, why: `${svc.canary.release ?? "the new release"} takes ${svc.canary.percent} % of users` };
  if (svc.preview?.held) return { tone: "warn", word: "held", why: `${svc.preview.release} waits on the preview address for promote or abort` };
  if (svc.lock) return { tone: "info", word: flow?.kind === "rollback" ? "rolling back" : "deploying", why: `lock held by ${svc.lock.owner}`, since: svc.lock.since };
  if (!svc.color) return { tone: "idle", word: "not deployed", why: "nothing deployed yet" };
  if (svc.color && live.length === 0) return { tone: "bad", word: "no instances", why: `nothing runs in the live slot ${svc.color}` };
  if (warning.length) return { tone: "warn", word: "warning", why: `${warning[0].id}: ${warning[0].health.status} ${lastOutput(warning[0])}` };
  if (svc.replicas && live.length < svc.replicas) return { tone: "warn", word: "short", why: `${live.length} of ${svc.replicas} live instances run` };
  return { tone: "ok", word: "healthy", why: "" };
}
/** The new release on its preview address, during a deploy or held there, as status reports it. */
function Preview({ p }) {
  if (!p) return null;
  return html`<section class=${`card ${p.held ? "banner-card warn" : ""}`}><h2>${p.held ? "Held for review" : "Preview"}</h2>
    <p>${p.release} in <span class=${`slot ${p.slot}`}>${p.slot}</span>${p.url ? html` answers at <a href=${p.url}><code>${p.url}</code></a>` : ""}${p.held ? html`, held since ${clock(p.heldSince)} by ${p.heldBy ?? "?"}` : ""}.</p>
    ${p.held && html`<p class="muted small">It takes no users until <code>turquoise promote</code> (or <code>turquoise abort</code>).</p>`}
  </section>`;
}

/** A deploy going out in canary steps: the new slot's share of users now. */
function Canary({ c }) {
  if (!c) return null;
  return html`<section class="card"><h2>Canary</h2>
    <p>${c.release ?? "the new release"} in <span class=${`slot ${c.slot}`}>${c.slot}</span> takes <b>${c.percent} %</b> of users.</p>
    <div class="share" role="img" aria-label=${`${c.percent} percent of users`}><i style=${{ width: `${Math.max(0, Math.min(100, c.percent))}%` }}></i></div>
  </section>`;
}
function routeText(route) {
  return `${route.host ?? ""}${route.pathPrefix}`;
}
/** When the live release went live: its last successful flow's end, from history; else when its slot started. */
function liveSince(svc, rec) {
  const h = S.history[svc.name];
  const e = Array.isArray(h) ? h.find((x) => x.outcome === "succeeded" && x.release === rec.release && x.finishedAt) : undefined;
  return e?.finishedAt ?? rec.startedAt;
}
function lastOutput(i) {
  const hist = i?.health?.history ?? [];
  return hist.length ? hist[hist.length - 1].output : "";
}
const MARK = { ok: "●", warn: "▲", bad: "✕", info: "◆", idle: "○" };
function Pill({ tone, children }) {
  return html`<span class=${`pill ${tone}`}><span aria-hidden="true">${MARK[tone]} </span>${children}</span>`;
}
function healthTone(status) {
  return status === "passing" ? "ok" : status === "critical" ? "bad" : "warn";
}

// ---- components ----
function SignIn() {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    await signIn(token);
    setBusy(false);
    setToken("");
  };
  return html`<main class="signin">
    <form class="card" method="post" action="/ui/session" onSubmit=${submit} autocomplete="off">
      <h1><span class="logo" aria-hidden="true"></span> Turquoise</h1>
      <p>Sign in with the agent's admin token, or with a read token for a read-only view.</p>
      <label for="token">Token</label>
      <input id="token" name="token" type="password" required spellcheck="false" value=${token} onInput=${(e) => setToken(e.target.value)} />
      ${S.signInError && html`<p class="error" role="alert">${S.signInError}</p>`}
      <button class="primary" disabled=${busy || !token}>Sign in</button>
      <p class="hint">The admin token is in the state directory's <code>token</code> file. <code>turquoise token create --read</code> makes a read token.</p>
    </form>
  </main>`;
}

function Header() {
  const st = S.status;
  const connTone = S.conn === "live" ? "ok" : "warn";
  return html`<header class="top">
    <a class="brand" href="#/"><span class="logo" aria-hidden="true"></span> Turquoise</a>
    <span class="meta">${st ? `agent pid ${st.agent.pid} · proxy pid ${st.proxy.pid} on ${st.proxy.address}` : ""}</span>
    <span class="grow"></span>
    <${Pill} tone=${connTone}>${S.conn === "live" ? "live" : S.conn}<//>
    <span class="scope">${S.session.scope === "read" ? "read-only" : "admin"}</span>
    <button onClick=${signOut}>Sign out</button>
  </header>`;
}

function Overview() {
  const st = S.status;
  if (!st) return html`<p class="muted">${S.statusError || "Loading…"}</p>`;
  const judged = st.services.map((svc) => ({ svc, j: judge(svc, S.flows[svc.name]) }));
  const attention = judged.filter(({ j }) => j.tone === "bad" || j.tone === "warn" || j.tone === "info");
  const counts = { ok: 0, warn: 0, bad: 0, info: 0, idle: 0 };
  for (const { j } of judged) counts[j.tone]++;
  return html`<main>
    <section class="summary" aria-label="summary">
      <h1>${st.services.length} service${st.services.length === 1 ? "" : "s"}</h1>
      <${Pill} tone="ok">${counts.ok} healthy<//>
      ${counts.bad > 0 && html`<${Pill} tone="bad">${counts.bad} failing<//>`}
      ${counts.warn > 0 && html`<${Pill} tone="warn">${counts.warn} warning<//>`}
      ${counts.info > 0 && html`<${Pill} tone="info">${counts.info} deploying<//>`}
      ${counts.idle > 0 && html`<${Pill} tone="idle">${counts.idle} not deployed<//>`}
    </section>
    ${st.quarantined?.length > 0 && html`<section class="banner bad" role="alert"><strong>${st.quarantined.length} invalid record(s) set aside.</strong> Nothing acts on them; the next successful deploy of their service clears them.
      <ul>${st.quarantined.map((q) => html`<li><code>${q.key}</code> ${clock(q.at)}: ${q.reason}</li>`)}</ul></section>`}
    ${attention.length > 0 && html`<section class="attention" aria-label="needs attention">
      <h2>Needs attention</h2>
      <ul>${attention.map(({ svc, j }) => html`<li><a href=${`#/services/${encodeURIComponent(svc.name)}`}><strong>${svc.name}</strong></a> <${Pill} tone=${j.tone}>${j.word}<//> <span class="why">${j.why}</span>${j.since ? html` <span class="muted" title=${clock(j.since)}>since ${ago(j.since)}</span>` : ""}</li>`)}</ul>
    </section>`}
    <section class="grid" aria-label="services">${judged.map(({ svc, j }) => html`<${ServiceCard} key=${svc.name} svc=${svc} j=${j} />`)}</section>
  </main>`;
}

function slotRates(svc, slot) {
  const rec = svc.slots[slot];
  return rec ? S.rates[rec.poolId] : undefined;
}

function ServiceCard({ svc, j }) {
  const live = svc.color ? svc.slots[svc.color] : null;
  const other = svc.color ? svc.slots[svc.color === "blue" ? "green" : "blue"] : null;
  const inst = svc.instances.filter((i) => i.slot === svc.color);
  const passing = inst.filter((i) => i.health.status === "passing").length;
  const r = svc.color ? slotRates(svc, svc.color) : undefined;
  return html`<a class=${`card service ${j.tone}`} href=${`#/services/${encodeURIComponent(svc.name)}`} data-service=${svc.name}>
    <div class="row"><h3>${svc.name}</h3><${Pill} tone=${j.tone}>${j.word}<//></div>
    <div class="muted route">${routeText(svc.route)}</div>
    ${live ? html`<div class="liverow"><span class=${`slot ${svc.color}`}>${svc.color}</span> <strong class="release">${live.release}</strong> <span class="muted" title=${clock(live.startedAt)}>since ${ago(live.startedAt)}</span></div>` : html`<div class="muted">nothing live</div>`}
    ${other && html`<div class="muted small">${other.state} ${other.release}${other.warmUntil ? ` until ${clock(other.warmUntil)}` : ""}</div>`}
    <div class="figures">
      <span><b>${passing}/${Math.max(inst.length, svc.color ? svc.replicas ?? 0 : 0)}</b> passing</span>
      <span><b>${rate(r?.rps)}</b> req/s</span>
      <span class=${r?.errorRate > 0 ? "bad-text" : ""}><b>${pct(r?.errorRate)}</b> errors</span>
    </div>
  </a>`;
}

function ServicePage({ name }) {
  const st = S.status;
  if (!st) return html`<p class="muted">${S.statusError || "Loading…"}</p>`;
  const svc = st.services.find((s) => s.name === name);
  if (!svc) return html`<main><p class="error">No service named ${name}.</p><a href="#/">Back to the overview</a></main>`;
  const flow = S.flows[name];
  const j = judge(svc, flow);
  const admin = S.session.scope === "admin";
  return html`<main class="service-page">
    <nav class="crumbs"><a href="#/">Overview</a> / ${name}</nav>
    <div class="row title"><h1>${name}</h1><${Pill} tone=${j.tone}>${j.word}<//><span class="muted route">${routeText(svc.route)}</span></div>
    ${svc.degraded && html`<section class="banner bad" role="alert"><strong>Degraded since ${clock(svc.degraded.since)} (${ago(svc.degraded.since)}):</strong> ${svc.degraded.reason}. The next deploy resets it.</section>`}
    ${j.tone === "bad" && !svc.degraded && html`<section class="banner bad" role="alert"><strong>${j.word}:</strong> ${j.why}</section>`}
    ${flow && html`<${FlowPanel} flow=${flow} svc=${svc} />`}
    ${!flow && svc.lock && html`<section class="banner info">A flow holds the deploy lock: ${svc.lock.owner}, since ${clock(svc.lock.since)}.</section>`}
    <section class="slots">${["blue", "green"].map((slot) => html`<${SlotCard} key=${slot} svc=${svc} slot=${slot} />`)}</section>
    <${Canary} c=${svc.canary} />
    <${Preview} p=${svc.preview} />
    ${admin ? html`<${Actions} svc=${svc} busy=${!!svc.lock} />` : html`<p class="muted">Read-only view: deploys and rollbacks need the admin token.</p>`}
    <${Instances} svc=${svc} />
    <${Schema} m=${S.migrations[name]} />
    <${History} h=${S.history[name]} />
  </main>`;
}

function SlotCard({ svc, slot }) {
  const rec = svc.slots[slot];
  const r = slotRates(svc, slot);
  const state = svc.color === slot ? "live" : rec?.state ?? "idle";
  const tone = state === "live" ? "ok" : state === "preview" ? "info" : state === "warm" || state === "held" ? "warn" : "idle";
  return html`<div class=${`card slotcard ${state}`} data-slot=${slot}>
    <div class="row"><h2><span class=${`slot ${slot}`}>${slot}</span></h2><${Pill} tone=${tone}>${state}<//></div>
    ${rec ? html`<div class="release big">${rec.release}</div>
      <div class="muted small" title=${clock(state === "live" ? liveSince(svc, rec) : rec.startedAt)}>${state === "live" ? `live since ${clock(liveSince(svc, rec))} (${ago(liveSince(svc, rec))})` : `started ${ago(rec.startedAt)}`}${rec.warmUntil ? html` · kept warm until ${clock(rec.warmUntil)}` : ""}${rec.schema ? ` · schema ${rec.schema.min}..${rec.schema.max}` : ""}</div>
      <div class="figures"><span><b>${rate(r?.rps)}</b> req/s</span><span class=${r?.errorRate > 0 ? "bad-text" : ""}><b>${pct(r?.errorRate)}</b> errors</span><span><b>${r?.inFlight ?? "–"}</b> in flight</span></div>
      <${Spark} series=${r?.series ?? []} />` : html`<div class="muted">idle: nothing runs here</div>`}
  </div>`;
}

function Spark({ series }) {
  // Bars, not SVG: heights set through the CSSOM, which the CSP (no inline style attributes) allows.
  const max = Math.max(1, ...series);
  return html`<div class="spark" role="img" aria-label=${`requests per second, last ${series.length * 2} s`}>${series.map((v, i) => html`<i key=${i} style=${{ height: `${Math.max(4, (v / max) * 100)}%` }}></i>`)}</div>`;
}

function FlowPanel({ flow, svc }) {
  const running = flow.outcome === "running";
  const tone = running ? "info" : flow.outcome === "succeeded" ? "ok" : "bad";
  const names = flow.steps.map((s) => s.name);
  const migrated = names.includes("migrate");
  const rechecked = flow.steps.some((s) => s.name === "recheck" && s.status === "done");
  const stage = !migrated ? 1 : !rechecked ? 2 : 3;
  const done = flow.outcome === "succeeded";
  return html`<section class=${`card flow ${tone}`} aria-live="polite" data-outcome=${flow.outcome}>
    <div class="row"><h2>${flow.kind === "rollback" ? "Rollback" : "Deploy"} ${flow.release ?? ""}</h2><${Pill} tone=${tone}>${flow.outcome}<//>
      <span class="muted">${flow.from ? `from ${flow.from}` : ""}${flow.via ? ` via ${flow.via}` : ""}${flow.startedAt ? ` · started ${ago(flow.startedAt)}` : ""}</span></div>
    ${flow.via && html`<ol class="stages" aria-label="turquoise path">
      ${[`${flow.from ?? "live"} → ${flow.via}`, "migrate the schema", `${flow.via} → ${flow.release}`].map((label, i) => {
        const state = done || stage > i + 1 ? "done" : stage === i + 1 ? (running ? "active" : "failed") : "todo";
        return html`<li class=${state}><span class="n">${i + 1}</span> ${label} <span class="sr">(${state})</span></li>`;
      })}
    </ol>`}
    <ol class="steps">${flow.steps.map((s) => html`<li class=${`step ${s.status}`} data-step=${s.name}>
      <span class="mark" aria-hidden="true">${s.status === "done" ? "✓" : s.status === "failed" ? "✗" : s.status === "skipped" ? "–" : "…"}</span>
      <span class="name">${s.name}</span><span class="state">${s.status}</span><span class="dur">${ms(s.durationMs)}</span>
      <span class="detail">${s.detail ?? ""}</span></li>`)}</ol>
    ${flow.plan?.length > 0 && html`<details class="planned"><summary>The plan (${flow.plan.length} steps)</summary><pre class="plan">${flow.plan.map((l) => `  ${l}`).join("\n")}</pre></details>`}
    ${flow.backfill && html`<div class="muted small">backfill ${flow.backfill.name ?? ""}: ${flow.backfill.done ?? ""}${flow.backfill.total ? ` / ${flow.backfill.total}` : ""}</div>`}
    ${running && flow.infos.length > 0 && html`<div class="muted small">… ${flow.infos[flow.infos.length - 1]}</div>`}
    ${(flow.error || (!running && flow.message)) && html`<p class=${flow.outcome === "succeeded" ? "muted" : "error"}>${flow.error ?? flow.message}</p>`}
    ${!running && html`<button class="link" onClick=${() => set((s) => { const f = { ...s.flows }; delete f[svc.name]; return { flows: f }; })}>Dismiss</button>`}
  </section>`;
}

function Actions({ svc, busy }) {
  const [release, setRelease] = useState("");
  const [via, setVia] = useState("");
  const known = [...new Set((Array.isArray(S.history[svc.name]) ? S.history[svc.name] : []).map((e) => e.release))];
  const submit = (e) => {
    e.preventDefault();
    if (release.trim()) askDeploy(svc.name, release.trim(), via.trim() || undefined);
  };
  return html`<section class="card actions" aria-label="actions">
    <form class="deploy" onSubmit=${submit}>
      <label for="release">Deploy a release</label>
      <div class="row">
        <input id="release" list="known-releases" placeholder="release, e.g. v2" value=${release} onInput=${(e) => setRelease(e.target.value)} spellcheck="false" />
        <input id="via" class="narrow" placeholder="via (optional)" value=${via} onInput=${(e) => setVia(e.target.value)} spellcheck="false" aria-label="turquoise release to walk through (optional)" />
        <button class="primary" disabled=${busy || !release.trim()}>Review plan…</button>
      </div>
      <datalist id="known-releases">${known.map((r) => html`<option value=${r} />`)}</datalist>
    </form>
    <div class="rollback">
      <span class="muted">${svc.previous ? `previous: ${svc.previous.release}` : "no previous release recorded"}</span>
      <button class="danger" disabled=${busy || !svc.color} onClick=${() => askRollback(svc.name)}>Roll back…</button>
    </div>
    ${busy && html`<p class="muted small">A flow is under way: new ones wait until it ends.</p>`}
  </section>`;
}

function Dialog() {
  const d = S.dialog;
  const ref = useRef(null);
  useEffect(() => { ref.current?.querySelector("button.confirm, button.cancel")?.focus(); }, [d?.plan, d?.error]);
  if (!d) return null;
  const close = () => set({ dialog: null });
  const p = d.plan;
  const verb = d.kind === "rollback" ? "Roll back" : "Deploy";
  const target = d.kind === "rollback" ? (p?.lines?.length ? (svcPrevious(d.service) ?? "the previous release") : "") : d.release;
  const what = d.kind === "rollback"
    ? `Roll back ${d.service} from ${p?.live ?? "the live release"} to ${target}${p?.via ? ` through ${p.via}` : ""}. Traffic moves back once the old release passes its checks; a failure before the flip leaves ${p?.live ?? "the live release"} serving.`
    : `Deploy ${d.release} to ${d.service}${p?.via ? ` through the turquoise release ${p.via}` : ""}. ${p?.live ? `Traffic moves from ${p.live} to ${d.release} in one flip once ${d.release} passes its checks; a failure before the flip leaves ${p.live} serving.` : `${d.release} becomes the first live release.`}`;
  return html`<div class="overlay" onClick=${(e) => e.target === e.currentTarget && close()}>
    <div class="card dialog" role="dialog" aria-modal="true" aria-labelledby="dialog-title" ref=${ref} onKeyDown=${(e) => e.key === "Escape" && close()}>
      <h2 id="dialog-title">${verb} ${d.service}${d.kind === "deploy" ? ` ${d.release}` : ""}?</h2>
      ${d.loading && html`<p class="muted">Computing the plan…</p>`}
      ${d.error && html`<p class="error" role="alert">${d.error}</p>`}
      ${p && html`<pre class="plan">${[`${p.kind} plan for ${d.service} (live: ${p.live ?? "nothing"})${p.via ? ` via ${p.via}` : ""}`, ...p.lines.map((l) => `  ${l}`)].join("\n")}</pre>
        ${p.warnings?.length > 0 && html`<ul class="warnings">${p.warnings.map((w) => html`<li>${w}</li>`)}</ul>`}
        <p class="what">${what}</p>`}
      <div class="row end">
        <button class="cancel" onClick=${close}>Cancel</button>
        ${p && html`<button class=${`confirm ${d.kind === "rollback" ? "danger" : "primary"}`} onClick=${() => run(d)}>${verb} ${d.service}${d.kind === "deploy" ? ` to ${d.release}` : target ? ` to ${target}` : ""}</button>`}
      </div>
    </div>
  </div>`;
}
function svcPrevious(name) {
  return S.status?.services.find((s) => s.name === name)?.previous?.release;
}

function Instances({ svc }) {
  return html`<section class="card"><h2>Instances</h2>
    ${svc.instances.length === 0 ? html`<p class="muted">No instances run.</p>` : html`<div class="table-wrap"><table class="instances">
      <thead><tr><th>instance</th><th>slot</th><th>release</th><th>health</th><th>address</th><th>up</th><th>last check</th></tr></thead>
      <tbody>${svc.instances.map((i) => html`<tr key=${i.id} data-instance=${i.id}>
        <td><code>${i.id}</code></td><td><span class=${`slot ${i.slot}`}>${i.slot}</span></td><td>${i.release}</td>
        <td><${Pill} tone=${healthTone(i.health.status)}>${i.health.status}<//></td><td><code>${i.address}</code></td>
        <td title=${clock(i.startedAt)}>${ago(i.startedAt).replace(" ago", "")}</td><td class="output">${lastOutput(i)}</td></tr>`)}</tbody>
    </table></div>`}
  </section>`;
}

function Schema({ m }) {
  if (!m) return html`<section class="card"><h2>Schema</h2><p class="muted">Loading…</p></section>`;
  if (m.error) return html`<section class="card"><h2>Schema</h2><p class="muted">${m.error}</p></section>`;
  return html`<section class="card"><h2>Schema</h2>
    <p>Version <b>${m.current}</b>${m.pending?.length ? html` · <${Pill} tone="warn">${m.pending.length} pending<//>` : html` · <${Pill} tone="ok">up to date<//>`}</p>
    ${m.pending?.length > 0 && html`<ul class="pending">${m.pending.map((p) => html`<li><code>${p.version}</code> ${p.name} <span class="muted">${p.phase ?? ""}${p.hasDown ? "" : " · no down migration"}</span></li>`)}</ul>`}
  </section>`;
}

function History({ h }) {
  const [open, setOpen] = useState(null);
  if (!h) return html`<section class="card"><h2>History</h2><p class="muted">Loading…</p></section>`;
  if (h.error) return html`<section class="card"><h2>History</h2><p class="error">${h.error}</p></section>`;
  return html`<section class="card"><div class="row"><h2>History</h2>${h.length > 0 && html`<span class="muted small">click a row for its steps</span>`}</div>
    ${h.length === 0 ? html`<p class="muted">No deploys yet.</p>` : html`<div class="table-wrap"><table class="history">
      <thead><tr><th>#</th><th>when</th><th>what</th><th>outcome</th><th>took</th><th>by</th></tr></thead>
      <tbody>${h.map((e) => {
        const tone = e.outcome === "succeeded" ? "ok" : e.outcome === "running" ? "info" : "bad";
        return html`<tr key=${e.id} class="entry" data-history=${e.id} onClick=${() => setOpen(open === e.id ? null : e.id)} aria-expanded=${open === e.id}>
          <td>${e.id}</td><td title=${clock(e.startedAt)}>${clock(e.startedAt)}</td>
          <td>${e.kind} ${e.previousRelease ?? "–"} → ${e.via ? `${e.via} → ` : ""}<b>${e.release}</b></td>
          <td><${Pill} tone=${tone}>${e.outcome}<//></td><td>${e.finishedAt ? ms(e.finishedAt - e.startedAt) : "running"}</td><td class="actor">${e.actor}</td>
        </tr>
        ${open === e.id && html`<tr class="steps-row"><td colspan="6">
          ${e.error && html`<p class="error">${e.error}</p>`}
          <ol class="steps">${e.steps.map((s) => html`<li class=${`step ${!s.ok ? "failed" : s.detail?.startsWith("skipped:") ? "skipped" : "done"}`}>
            <span class="mark" aria-hidden="true">${!s.ok ? "✗" : s.detail?.startsWith("skipped:") ? "–" : "✓"}</span><span class="name">${s.name}</span>
            <span class="state">${clock(s.startedAt)}</span><span class="dur">${ms(s.durationMs)}</span><span class="detail">${s.detail?.split("\n")[0] ?? ""}</span></li>`)}</ol>
        </td></tr>`}`;
      })}</tbody>
    </table></div>`}
  </section>`;
}

function App() {
  if (S.session === undefined) return html`<p class="muted center">Loading…</p>`;
  if (S.session === null) return html`<${SignIn} />`;
  return html`<${Header} />${S.route.page === "service" ? html`<${ServicePage} name=${S.route.name} />` : html`<${Overview} />`}<${Dialog} />`;
}

const root = document.getElementById("app");
function draw() {
  render(html`<${App} />`, root);
}
// Relative times ("3m ago") move on without asking the agent anything.
setInterval(() => set({ now: Date.now() }), 10_000);
draw();
start();
