// Hostile values on the dashboard, in Chromium: everything an app, a CI or a token's maker can put
// in what the page draws (check output, history actor and error, degraded reason, a quarantined
// key, a flow's messages) is shown as text; no script runs and no element is injected.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { REPO_ROOT } from "../../src/demo/workspace.js";
import { Records } from "../../src/deploy/records.js";
import { startHarness, type Harness } from "../api/harness.js";

/** Each would set window.__pwned, were it parsed as markup or run as a URL. */
const HOSTILE = [
  `<img src=x onerror="window.__pwned='img'">`,
  `<script>window.__pwned='script'</script>`,
  `"><svg onload="window.__pwned='svg'">`,
  `javascript:window.__pwned='url'`,
].join(" ");

describe("hostile values on the dashboard, in chromium", { timeout: 180_000 }, () => {
  let h: Harness;
  let browser: Browser;
  let page: Page;
  const blocked: string[] = [];

  before(async () => {
    h = await startHarness();
    const records = new Records(h.store);
    const now = Date.now();
    // books: live on blue with one critical instance whose health body is hostile (an app can print anything).
    await records.setColor("books", "blue");
    await records.setSlot("books", { slot: "blue", release: "v1", poolId: "p1", state: "live", startedAt: now } as never);
    const instance = { id: "books-blue-1", service: "books", slot: "blue", release: "v1", host: "127.0.0.1", port: 1, ref: "1", startedAt: now };
    Object.assign(h.agent, {
      fleet: { list: (svc: string) => (svc === "books" ? [instance] : []) },
      monitor: { state: () => ({ status: "critical", history: [{ at: now, status: "critical", output: `HTTP 500: ${HOSTILE}` }] }) },
    });
    await h.store.addHistory({
      service: "books", kind: "deploy", release: "v1", previousRelease: null, via: null, actor: `webhook (deploy token abc ${HOSTILE})`,
      startedAt: now - 5_000, finishedAt: now - 1_000, outcome: "failed", plan: [HOSTILE], steps: [], error: `health body: ${HOSTILE}`,
    });
    // api: degraded, with a hostile reason (it quotes an instance's output).
    await records.setColor("api", "green");
    await records.setSlot("api", { slot: "green", release: "v1", poolId: "p2", state: "live", startedAt: now } as never);
    await records.setDegraded("api", { since: now, slot: "green", release: "v1", reason: `replacement failed: ${HOSTILE}` });
    await h.store.appendEvent({ service: "books", type: "check.changed", message: HOSTILE, data: { output: HOSTILE } });

    const executablePath = execFileSync("bash", [path.join(REPO_ROOT, "scripts", "ensure-chromium.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
    browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
    page = await (await browser.newContext()).newPage();
    page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) blocked.push(m.text()); });
    await page.goto(`http://127.0.0.1:${h.port}/ui/`);
    await page.fill("#token", h.adminToken);
    await page.click("button.primary");
    await page.waitForSelector(".card.service[data-service=books]");
  });

  after(async () => {
    await browser?.close();
    await h?.close();
  });

  const pwned = () => page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned ?? null);
  const injected = () => page.evaluate(() => document.querySelectorAll("#app img, #app script, #app svg[onload], [onerror], [onload]").length);

  it("the overview shows a down instance's hostile health body and a hostile degraded reason as text", async () => {
    await page.waitForSelector(".card.service[data-service=books] >> text=down");
    const text = await page.locator("#app").innerText();
    assert.ok(text.includes(`<img src=x onerror="window.__pwned='img'">`), "the health body is shown, as text");
    assert.ok(text.includes("replacement failed: <img"), "the degraded reason is shown, as text");
    assert.equal(await injected(), 0, "no element came from a value");
    assert.equal(await pwned(), null);
  });

  it("a service page shows a hostile history actor, error and plan as text, and runs none of it", async () => {
    await page.goto(`http://127.0.0.1:${h.port}/ui/#/services/books`);
    await page.waitForSelector("table.history tr.entry");
    assert.match(await page.locator("table.history td.actor").first().innerText(), /deploy token abc <img src=x onerror=/);
    await page.click("table.history tr.entry");
    await page.waitForSelector("tr.steps-row");
    assert.ok((await page.locator("#app").innerText()).includes("health body: <img"), "the history error is shown, as text");
    assert.equal(await injected(), 0);
    assert.equal(await pwned(), null);
  });

  it("a javascript: URL typed into the address bar's hash route does not run either", async () => {
    await page.goto(`http://127.0.0.1:${h.port}/ui/#/services/${encodeURIComponent(HOSTILE)}`);
    await page.waitForSelector("text=No service named");
    assert.equal(await injected(), 0);
    assert.equal(await pwned(), null);
    // Nothing was even tried against the CSP: the values never reached a place that runs code.
    assert.deepEqual(blocked, []);
  });
});
