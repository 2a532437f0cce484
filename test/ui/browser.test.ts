// The dashboard in a real browser (Debian's chromium, driven by playwright-core) against a real
// agent, proxy and instances: sign-in, the overview, a deploy started from the page whose steps
// appear live, a rollback through its confirmation, a hung instance turning critical and being
// replaced, a wrong token refused; the page weight and the overview's render time with 20 services.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { REPO_ROOT, createWorkspace, type Workspace } from "../../src/demo/workspace.js";
import { RELEASE_KINDS, api, get, stopAgent, tokenOf, waitFor, workspaceWith } from "../e2e/helpers.js";

/** The issue's budgets: all of the dashboard's files, uncompressed; the overview with 20 services. */
const PAGE_WEIGHT_LIMIT_BYTES = 300 * 1024;
const RENDER_LIMIT_MS = 1_000;
/** Screenshots land in docs/ when asked (TQ_SCREENSHOTS=1), so a test run does not rewrite committed files. */
const SCREENSHOTS = process.env.TQ_SCREENSHOTS === "1";
const OTHER_SERVICES = Array.from({ length: 19 }, (_, i) => `svc-${String(i + 1).padStart(2, "0")}`);
const DEPLOYED_OTHERS = OTHER_SERVICES.slice(0, 3);
const WAIT_MS = 60_000;
/** Steady traffic through the proxy while the page watches: the rates it draws, and proof that a deploy from the page drops nothing. */
const LOAD_MAX_REQUESTS = 4_000;
const LOAD_MAX_MS = 240_000;
const LOAD_GAP_MS = 40;

/** Debian's chromium, installed by scripts/ensure-chromium.sh when missing. */
function launch(): Promise<Browser> {
  const executablePath = execFileSync("bash", [path.join(REPO_ROOT, "scripts", "ensure-chromium.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  return chromium.launch({ executablePath, args: ["--no-sandbox"] });
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.fill("#token", token);
  await page.click("button.primary");
}

describe("the dashboard in chromium", { timeout: 300_000 }, () => {
  let ws: Workspace;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let ui: string;
  const load = { ok: 0, failed: 0, stop: false, done: Promise.resolve() };

  before(async () => {
    ws = await workspaceWith(
      { v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.slowStart("v2", 1500) },
      { replicas: 2, healthInterval: "500ms", extraServiceYaml: "    bake: 0s\n" },
    );
    // 19 more services beside books: 20 on the overview, 4 of them deployed.
    const releases = path.dirname(fs.readFileSync(ws.specFile, "utf8").match(/cwd: "([^"]+)"/)![1]!);
    const more = OTHER_SERVICES.map((name) => `  ${name}:
    command: [${JSON.stringify(process.execPath)}, "server.mjs"]
    cwd: ${JSON.stringify(path.join(releases, "{release}"))}
    env: { BOOKS_FILE: ${JSON.stringify(path.join(ws.dir, `${name}.jsonl`))} }
    replicas: 1
    route: { path: /${name} }
    health: { http: /health, interval: 1s, timeout: 1s }
    bake: 0s
    keep_previous: 0s
`).join("");
    fs.appendFileSync(ws.specFile, more);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    for (const name of DEPLOYED_OTHERS) await ws.cli(["deploy", name, "--release", "v1"]);
    ui = `http://127.0.0.1:${ws.agentPort}/ui/`;
    load.done = (async () => {
      const until = Date.now() + LOAD_MAX_MS;
      for (let i = 0; i < LOAD_MAX_REQUESTS && !load.stop && Date.now() < until; i++) {
        const r = await get(`${ws.proxyUrl}/api/v1/books`).catch(() => ({ status: 0 }));
        if (r.status === 200) load.ok++;
        else load.failed++;
        await new Promise((res) => setTimeout(res, LOAD_GAP_MS));
      }
    })();
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    page = await context.newPage();
  });
  after(async () => {
    load.stop = true;
    await load.done;
    await browser?.close();
    await ws?.destroy();
  });

  const cookies = async () => (await context.cookies()).filter((c) => c.name === "tq_session");

  it("a wrong token is refused: an error, no cookie, still the sign-in form", async () => {
    await page.goto(ui);
    await signIn(page, "0".repeat(64));
    await page.waitForSelector("text=wrong or revoked token");
    assert.equal((await cookies()).length, 0);
    assert.equal(await page.locator(".grid").count(), 0);
  });

  it("signs in with the admin token and shows the overview: 20 services, books live on v1 and healthy", async () => {
    await signIn(page, tokenOf(ws));
    await page.waitForSelector(".card.service[data-service=books] >> text=healthy", { timeout: WAIT_MS });
    assert.equal(await page.locator(".card.service").count(), 20);
    const card = await page.locator(".card.service[data-service=books]").innerText();
    assert.match(card, /v1/);
    assert.match(card, /2\/2\s+passing/);
    const [cookie] = await cookies();
    assert.ok(cookie?.httpOnly, "the session cookie is HttpOnly");
    assert.equal(cookie?.sameSite, "Strict");
    // The token is nowhere the page can reach: not in its DOM, its URL or its storage.
    const reachable = await page.evaluate(() => document.documentElement.outerHTML + location.href + JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie);
    assert.ok(!reachable.includes(tokenOf(ws)));
    await page.waitForSelector(".top >> text=live");
    if (SCREENSHOTS) await page.screenshot({ path: path.join(REPO_ROOT, "docs", "dashboard-overview.png") });
  });

  it("deploys v2 from the page: the plan first, then a confirmation, then each step appears live until it succeeds", async () => {
    await page.click(".card.service[data-service=books]");
    await page.waitForSelector(".slotcard >> text=v1");
    // The live slot's rate comes from the proxy's counters over the event stream, while the load runs.
    await page.waitForFunction(() => /[1-9]/.test(document.querySelector(".slotcard.live .figures b")?.textContent ?? ""), undefined, { timeout: WAIT_MS });
    await page.fill("#release", "v2");
    await page.click("text=Review plan…");
    const plan = await page.waitForSelector(".dialog pre.plan");
    assert.match(await plan.innerText(), /^deploy plan for books \(live: v1\)/);
    const confirm = page.locator("button.confirm");
    assert.equal(await confirm.innerText(), "Deploy books to v2");
    assert.match(await page.locator(".dialog .what").innerText(), /Traffic moves from v1 to v2/);
    const failedBefore = load.failed;
    const okBefore = load.ok;
    await confirm.click();
    // v2 takes 1.5 s to start: its "healthy" step shows while the flow still runs, before "flip" exists.
    await page.waitForSelector(".flow[data-outcome=running] [data-step=healthy]", { timeout: WAIT_MS });
    assert.equal(await page.locator(".flow [data-step=flip]").count(), 0, "the flip has not happened yet");
    if (SCREENSHOTS) await page.screenshot({ path: path.join(REPO_ROOT, "docs", "dashboard-deploy.png") });
    await page.waitForSelector(".flow[data-outcome=succeeded]", { timeout: WAIT_MS });
    const steps = await page.locator(".flow .steps [data-step]").evaluateAll((els) => els.map((e) => `${e.getAttribute("data-step")}:${e.className.replace("step ", "")}`));
    for (const s of ["lock:done", "plan:done", "start:done", "healthy:done", "flip:done", "verify:done", "drain:done"]) assert.ok(steps.includes(s), `${s} in ${steps.join(" ")}`);
    assert.ok(steps.indexOf("start:done") < steps.indexOf("flip:done"));
    await page.waitForSelector(".slotcard.live >> text=v2", { timeout: WAIT_MS });
    assert.equal(load.failed - failedBefore, 0, "no request failed through the deploy");
    assert.ok(load.ok > okBefore);
    // History names the dashboard as who started it.
    await page.waitForSelector("table.history tr.entry >> text=dashboard", { timeout: WAIT_MS });
  });

  it("rolls back through the confirmation; Cancel changes nothing", async () => {
    const historyCount = async () => (JSON.parse((await api(ws, "/v1/services/books/history")).body) as { history: unknown[] }).history.length;
    const before = await historyCount();
    await page.click("text=Roll back…");
    await page.waitForSelector(".dialog pre.plan");
    assert.match(await page.locator(".dialog .what").innerText(), /Roll back books from v2 to v1/);
    await page.click("button.cancel");
    await page.waitForSelector(".dialog", { state: "detached" });
    assert.equal(await historyCount(), before, "Cancel started nothing");
    await page.click("text=Roll back…");
    await page.click("button.confirm");
    await page.waitForSelector(".flow[data-outcome=succeeded] >> text=Rollback", { timeout: WAIT_MS });
    await page.waitForSelector(".slotcard.live >> text=v1", { timeout: WAIT_MS });
    assert.equal(await historyCount(), before + 1);
  });

  it("a hung live instance turns critical on the page, and the service comes back with a replacement", async () => {
    const { services } = JSON.parse((await api(ws, "/v1/status")).body) as { services: Array<{ name: string; color: string; instances: Array<{ id: string; slot: string; ref: string }> }> };
    const books = services.find((s) => s.name === "books")!;
    const victim = books.instances.find((i) => i.slot === books.color)!;
    await page.goto(`${ui}#/services/books`);
    await page.waitForSelector(`tr[data-instance="${victim.id}"] >> text=passing`, { timeout: WAIT_MS });
    const pid = Number(victim.ref);
    assert.ok(pid > 1, `instance ref ${victim.ref} is a pid`);
    process.kill(pid, "SIGSTOP");
    try {
      await page.waitForSelector(`tr[data-instance="${victim.id}"] >> text=critical`, { timeout: WAIT_MS });
      await page.waitForSelector(".title >> text=critical", { timeout: WAIT_MS });
      // The overview on a bad day: what needs attention comes first, with why.
      const overview = await context.newPage();
      await overview.goto(ui);
      await overview.waitForSelector(".attention >> text=books", { timeout: WAIT_MS });
      if (SCREENSHOTS) await overview.screenshot({ path: path.join(REPO_ROOT, "docs", "dashboard-attention.png") });
      await overview.close();
    } finally {
      try { process.kill(pid, "SIGCONT"); } catch { /* replaced and gone */ }
    }
    await waitFor("the hung instance replaced", async () => (await page.locator(`tr[data-instance="${victim.id}"]`).count()) === 0 || undefined, WAIT_MS);
    try {
      await page.waitForSelector(".title >> text=healthy", { timeout: WAIT_MS });
    } catch (e) {
      await page.screenshot({ path: "/tmp/fail.png", fullPage: true });
      console.log(await page.locator("main").innerText());
      console.log((await api(ws, "/v1/status")).body.slice(0, 3000));
      throw e;
    }
    await page.waitForFunction(() => [...document.querySelectorAll("table.instances tr[data-instance]")].filter((tr) => tr.textContent!.includes("passing")).length === 2, undefined, { timeout: WAIT_MS });
  });

  it(`prints the page weight: every file the dashboard loads, uncompressed, under ${PAGE_WEIGHT_LIMIT_BYTES / 1024} kB`, async () => {
    const fresh = await context.newPage();
    const sizes = new Map<string, number>();
    fresh.on("response", async (r) => {
      const url = new URL(r.url());
      if (url.pathname.startsWith("/ui")) sizes.set(url.pathname, (await r.body()).length);
    });
    await fresh.goto(ui);
    await fresh.waitForSelector(".card.service[data-service=books]");
    await fresh.close();
    const total = [...sizes.values()].reduce((a, b) => a + b, 0);
    console.log(`dashboard page weight: ${(total / 1024).toFixed(1)} kB in ${sizes.size} files (${[...sizes].map(([p, n]) => `${p} ${(n / 1024).toFixed(1)} kB`).join(", ")})`);
    for (const f of ["/ui/", "/ui/app.js", "/ui/style.css", "/ui/vendor/preact.mjs", "/ui/vendor/hooks.mjs", "/ui/vendor/htm.mjs"]) assert.ok(sizes.has(f), `${f} loaded`);
    assert.ok(total < PAGE_WEIGHT_LIMIT_BYTES, `${total} bytes`);
  });

  it(`renders the overview with 20 services in under ${RENDER_LIMIT_MS} ms, measured in the page`, async () => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const fresh = await context.newPage();
      await fresh.goto(ui);
      // From navigation start to 20 service cards drawn with their data: page, scripts, session, status.
      await fresh.waitForFunction(() => document.querySelectorAll(".card.service .release").length >= 4 && document.querySelectorAll(".card.service").length === 20);
      times.push(await fresh.evaluate(() => performance.now()));
      await fresh.close();
    }
    const median = times.sort((a, b) => a - b)[1]!;
    console.log(`overview with 20 services rendered in ${median.toFixed(0)} ms (median of ${times.map((t) => t.toFixed(0)).join(", ")})`);
    assert.ok(median < RENDER_LIMIT_MS, `${median} ms`);
  });

  it("a read token gets the read-only view, with no deploy or rollback; sign-out returns to the sign-in form and ends the session", async () => {
    const read = JSON.parse((await api(ws, "/v1/tokens", { method: "POST", body: JSON.stringify({ read: true, name: "on-call" }) })).body) as { token: string };
    const ctx = await browser.newContext();
    try {
      const p = await ctx.newPage();
      await p.goto(`${ui}#/services/books`);
      await signIn(p, read.token);
      await p.waitForSelector("table.instances tr[data-instance]", { timeout: WAIT_MS });
      assert.equal(await p.locator(".top .scope").innerText(), "read-only");
      assert.equal(await p.locator("text=Review plan…").count(), 0);
      assert.equal(await p.locator("text=Roll back…").count(), 0);
      await p.waitForSelector("table.history tr.entry");
      const [cookie] = (await ctx.cookies()).filter((c) => c.name === "tq_session");
      await p.click("text=Sign out");
      await p.waitForSelector("#token");
      assert.equal((await ctx.cookies()).filter((c) => c.name === "tq_session").length, 0);
      // The old cookie, sent again by hand, is no session any more.
      const again = await ctx.request.get(`http://127.0.0.1:${ws.agentPort}/v1/status`, { headers: { cookie: `tq_session=${cookie!.value}` } });
      assert.equal(again.status(), 401);
    } finally {
      await ctx.close();
    }
  });

  it("reads narrow and dark: one column at 390 px, and a dark background when the system asks", async () => {
    const narrow = await browser.newContext({ viewport: { width: 390, height: 800 }, colorScheme: "dark", storageState: await context.storageState() });
    const p = await narrow.newPage();
    await p.goto(`${ui}#/services/books`);
    await p.waitForSelector("table.instances tr[data-instance]");
    const layout = await p.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, width: innerWidth, bg: getComputedStyle(document.body).backgroundColor }));
    assert.ok(layout.scrollWidth <= layout.width, `no sideways scrolling: ${layout.scrollWidth} > ${layout.width}`);
    assert.equal(layout.bg, "rgb(15, 20, 25)");
    if (SCREENSHOTS) await p.screenshot({ path: path.join(REPO_ROOT, "docs", "dashboard-service-dark-narrow.png"), fullPage: true });
    await narrow.close();
  });

  it("when the agent restarts under an open page, the page says the session ended and asks to sign in again", async () => {
    await page.goto(`${ui}#/services/books`);
    await page.waitForSelector(".top >> text=live", { timeout: WAIT_MS });
    await stopAgent(ws);
    await ws.cli(["up", "--detach"]);
    await page.waitForSelector("text=Your session ended", { timeout: WAIT_MS });
    await page.waitForSelector("#token");
    await signIn(page, tokenOf(ws));
    await page.waitForSelector("table.instances tr[data-instance] >> text=passing", { timeout: WAIT_MS });
  });
});

describe("a turquoise path in chromium", { timeout: 300_000 }, () => {
  let ws: Workspace;
  let browser: Browser;

  before(async () => {
    // The example's releases on a shared SQLite database: v2 runs on schema 1, v3 on 3, v2-turquoise on 1..3.
    ws = await createWorkspace({ replicas: 1, database: { driver: "sqlite", url: "sqlite:books.db" }, extraServiceYaml: "    bake: 0s\n" });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v2"]);
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await ws?.destroy();
  });

  it("deploys v3 through v2-turquoise from the page: three stages drawn, each done in turn, then the schema at 3", async () => {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    await page.goto(`http://127.0.0.1:${ws.agentPort}/ui/#/services/books`);
    await signIn(page, tokenOf(ws));
    await page.waitForSelector("text=Version 1", { timeout: WAIT_MS });
    await page.fill("#release", "v3");
    await page.fill("#via", "v2-turquoise");
    await page.click("text=Review plan…");
    assert.match(await (await page.waitForSelector(".dialog pre.plan")).innerText(), /^deploy plan for books \(live: v2\) via v2-turquoise/);
    assert.match(await page.locator(".dialog .what").innerText(), /through the turquoise release v2-turquoise/);
    await page.click("button.confirm");
    const stages = page.locator(".flow .stages li");
    await page.waitForSelector(".flow .stages li.active", { timeout: WAIT_MS });
    assert.deepEqual((await stages.allInnerTexts()).map((t) => t.replace(/\s+/g, " ").replace(/ \((done|active|todo|failed)\)$/, "").trim()), ["1 v2 → v2-turquoise", "2 migrate the schema", "3 v2-turquoise → v3"]);
    if (SCREENSHOTS) await page.screenshot({ path: path.join(REPO_ROOT, "docs", "dashboard-turquoise.png") });
    await page.waitForSelector(".flow[data-outcome=succeeded]", { timeout: WAIT_MS });
    assert.deepEqual(await stages.evaluateAll((els) => els.map((e) => e.className)), ["done", "done", "done"]);
    const steps = await page.locator(".flow .steps [data-step]").evaluateAll((els) => els.map((e) => e.getAttribute("data-step")));
    assert.ok(steps.indexOf("migrate") > steps.indexOf("flip") && steps.lastIndexOf("flip") > steps.indexOf("recheck"), steps.join(" "));
    await page.waitForSelector("text=Version 3", { timeout: WAIT_MS });
    await page.waitForSelector(".slotcard.live >> text=v3", { timeout: WAIT_MS });
  });
});
