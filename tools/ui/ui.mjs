// Drives Astra's web UI in Debian's Chromium, one scenario a run, for the integration tests,
// `astra bench` and the README's screenshots. Input comes in environment variables, the
// result goes out as one JSON line on stdout; any failure exits 1 with one line on stderr.
//
//   ASTRA_UI_URL       the agent's API, e.g. http://127.0.0.1:9478
//   ASTRA_UI_SCENARIO  overview | block | unblock | viewer | incident | lists | flows | shot
//   ASTRA_UI_TOKEN     a token to paste into the page (optional)
//   ASTRA_UI_ARG       the scenario's argument: an interface, an address, an incident id
//   ASTRA_UI_SHOT      write a screenshot of the last page here (optional)
//   ASTRA_UI_THEME     light or dark (optional)
import { chromium } from "playwright-core";

const env = process.env;
const url = (env.ASTRA_UI_URL || "").replace(/\/$/, "");
const scenario = env.ASTRA_UI_SCENARIO || "overview";
const arg = env.ASTRA_UI_ARG || "";
const token = env.ASTRA_UI_TOKEN || "";
const TIMEOUT = 15000;
// Console errors and exceptions of the page: any fails the scenario.
const errors = [];

function fail(msg) {
  throw new Error(msg);
}

async function signIn(page) {
  if (!token) return;
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForFunction(
    () => !["…", "anonymous", "wrong token"].includes(document.getElementById("role").textContent),
    null,
    { timeout: TIMEOUT },
  );
}

async function open(page, hash) {
  await page.goto(`${url}/${hash ? "#" + hash : ""}`, { waitUntil: "load" });
  await signIn(page);
  if (hash) {
    await page.evaluate((h) => (location.hash = h), hash);
  }
}

const scenarios = {
  // Traffic sent before the page opened is in the stream's hello: the interface's pass line
  // is drawn, and the next samples arrive and are painted.
  async overview(page) {
    const t0 = Date.now();
    await page.goto(`${url}/`, { waitUntil: "load" });
    await signIn(page);
    const series = `${arg} ingress pass`;
    await page.waitForSelector(`path[data-series="${series}"]`, { timeout: TIMEOUT });
    const chartMs = Date.now() - t0;
    const before = await page.evaluate(() => window.astra.painted.length);
    // Polls of a million flows take seconds: wait long enough for three.
    await page.waitForFunction((n) => window.astra.painted.length >= n + 3, before, { timeout: 4 * TIMEOUT });
    const r = await page.evaluate(() => ({
      firstPaint: window.astra.firstPaint,
      painted: window.astra.painted.slice(-3),
      legend: [...document.querySelectorAll(".legend span")].map((s) => s.textContent),
      conn: document.getElementById("conn").textContent,
      nav: performance.getEntriesByType("navigation")[0].toJSON(),
    }));
    if (r.conn !== "live") fail(`stream state is ${r.conn}`);
    if (!r.legend.some((l) => l.startsWith(series))) fail(`no legend for ${series}: ${r.legend}`);
    return {
      chart_ms: chartMs,
      first_paint_ms: r.firstPaint,
      dom_content_loaded_ms: r.nav.domContentLoadedEventEnd,
      // The page's work for a sample: from its arrival to the frame that drew it.
      update_ms: r.painted.map((p) => p.painted - p.arrived),
      // From the agent's poll to that frame.
      latency_ms: r.painted.map((p) => p.painted - p.t),
      legend: r.legend,
    };
  },

  // The admin adds a block through the form; the row shows, in the kernel.
  async block(page) {
    await open(page, "/lists?kind=block");
    await page.waitForSelector("[data-testid=add-form]", { state: "visible" });
    await page.fill("[data-testid=add-form] input[name=net]", arg);
    await page.fill("[data-testid=add-form] input[name=ttl]", "10m");
    await page.fill("[data-testid=add-form] input[name=reason]", "blocked in the browser test");
    await page.click("[data-testid=add-form] button[type=submit]");
    const row = page.locator("tr", { has: page.locator(`button[data-remove="${arg}/32"]`) });
    await row.waitFor({ timeout: TIMEOUT });
    const cells = await row.locator("td").allTextContents();
    if (!cells.includes("yes")) fail(`the entry is not in the kernel: ${cells}`);
    return { cells };
  },

  // The admin removes it again (confirming the dialog); the row goes.
  async unblock(page) {
    page.on("dialog", (d) => d.accept());
    await open(page, "/lists?kind=block");
    const button = page.locator(`button[data-remove="${arg}/32"]`);
    await button.click({ timeout: TIMEOUT });
    await button.waitFor({ state: "detached", timeout: TIMEOUT });
    return { removed: arg };
  },

  // The viewer sees the lists but no way to change them, and the API refuses a change made
  // with the viewer's token anyway.
  async viewer(page) {
    // A wrong token first: the page says so, and stays read-only.
    await page.goto(`${url}/#/lists?kind=block`, { waitUntil: "load" });
    await page.fill("#token", "0".repeat(64));
    await page.click("#token-form button");
    await page.waitForFunction(() => document.getElementById("role").textContent === "wrong token", null, { timeout: TIMEOUT });
    const wrong = await page.textContent("#banner");
    if (!wrong.includes("wrong")) fail(`a wrong token's banner says ${wrong}`);
    await signIn(page);
    await page.evaluate(() => (location.hash = "/lists?kind=block"));
    await page.waitForTimeout(300);
    // The refusals the wrong token got are logged as failed loads: those are no fault.
    for (let i; (i = errors.findIndex((e) => e.includes("status of 401"))) >= 0; ) errors.splice(i, 1);
    const role = await page.textContent("#role");
    if (role !== "viewer") fail(`role is ${role}`);
    await page.waitForSelector("[data-testid=list-range]");
    const banner = await page.textContent("#banner");
    if (!banner.includes("Read-only")) fail(`banner says ${banner}`);
    if (await page.isVisible("[data-testid=add-form]")) fail("the viewer sees the add form");
    const removes = await page.locator("button[data-remove]").evaluateAll((bs) => bs.filter((b) => b.offsetParent !== null).length);
    if (removes) fail(`the viewer sees ${removes} remove buttons`);
    const status = await page.evaluate(async ([addr, t]) => {
      const r = await fetch("/api/v1/blocklist", {
        method: "POST",
        headers: { Authorization: "Bearer " + t, "Content-Type": "application/json" },
        body: JSON.stringify({ net: addr }),
      });
      return r.status;
    }, [arg, token]);
    if (status !== 403) fail(`a viewer's POST got ${status}`);
    // The refusal the scenario asked for is logged as a failed load: that one is no fault.
    await page.waitForTimeout(100);
    const i = errors.findIndex((e) => e.includes("status of 403"));
    if (i >= 0) errors.splice(i, 1);
    const rows = await page.locator("tbody tr").count();
    return { role, post_status: status, rows };
  },

  // An incident's report renders: summary, actions, flows; and its alert's evidence opens
  // from the alerts view filtered by its source.
  async incident(page) {
    const [id, source] = arg.split(" ");
    await open(page, `/incidents/${encodeURIComponent(id)}`);
    const summary = await page.textContent("[data-testid=incident-summary]", { timeout: TIMEOUT });
    if (!summary.includes(source)) fail(`summary does not name ${source}: ${summary}`);
    const flows = await page.locator(".card:has(h2:text-matches('^Flows')) tbody tr").count();
    const actions = await page.locator(".card:has(h2:text('Actions taken')) li").allTextContents();
    await page.evaluate((s) => (location.hash = `/alerts?source=${s}`), source);
    const row = page.locator(`tr[data-id="${id}"]`);
    await row.click({ timeout: TIMEOUT });
    const detail = await page.locator("tr.detail").textContent({ timeout: TIMEOUT });
    if (!detail.includes("rule")) fail(`no evidence under the alert: ${detail}`);
    const others = await page.locator("tr[data-id]").evaluateAll((rs, s) => rs.filter((r) => !r.textContent.includes(s)).length, source);
    if (others) fail(`${others} alerts of other sources under a source filter`);
    return { summary, flows, actions };
  },

  // A long list: the first page comes, and the pager walks on.
  async lists(page) {
    const t0 = Date.now();
    await open(page, "/lists?kind=block");
    const range = page.locator("[data-testid=list-range]");
    await range.waitFor({ timeout: TIMEOUT });
    const firstMs = Date.now() - t0;
    const first = await range.textContent();
    if (await page.isDisabled("button[data-page=next]")) return { first, first_page_ms: firstMs };
    const t1 = Date.now();
    await page.click("button[data-page=next]");
    await page.waitForFunction((f) => document.querySelector("[data-testid=list-range]").textContent !== f, first, { timeout: TIMEOUT });
    return { first, first_page_ms: firstMs, next_page_ms: Date.now() - t1, second: await range.textContent() };
  },

  // The largest flows: the first table comes.
  async flows(page) {
    const t0 = Date.now();
    await open(page, "/flows?top=100");
    await page.waitForSelector("#view p.muted", { timeout: 4 * TIMEOUT });
    const shown = await page.textContent("#view p.muted");
    return { first_page_ms: Date.now() - t0, shown };
  },

  // A page as it is, for the README.
  async shot(page) {
    await open(page, arg || "/overview");
    await page.waitForTimeout(1500);
    // Notices come and go; the picture is of the view.
    await page.evaluate(() => document.getElementById("toasts").replaceChildren());
    return {};
  },
};

let code = 0;
let browser = null;
try {
  // Playwright gives each launch a fresh, empty profile of its own, removed at close.
  browser = await chromium.launch({
    executablePath: env.ASTRA_UI_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // As root in a closed network: no sandbox (it needs user namespaces root does not get
    // here), and none of Chromium's own connections, which this network refuses by the dozen.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({
    viewport: { width: 1400, height: 1000 },
    colorScheme: env.ASTRA_UI_THEME === "dark" ? "dark" : "light",
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  const run = scenarios[scenario];
  if (!run) fail(`no scenario ${scenario}: one of ${Object.keys(scenarios).join(", ")}`);
  const result = await run(page);
  const pageErrors = await page.evaluate(() => (window.astra ? window.astra.errors : ["the app did not start"]));
  if (env.ASTRA_UI_SHOT) await page.screenshot({ path: env.ASTRA_UI_SHOT, fullPage: false });
  if (errors.length || pageErrors.length) fail(`errors in the page: ${[...errors, ...pageErrors].join(" | ")}`);
  process.stdout.write(JSON.stringify({ scenario, ...result }) + "\n");
} catch (e) {
  process.stderr.write(`${scenario}: ${String(e.message || e).split("\n")[0]}\n`);
  code = 1;
} finally {
  if (browser) await browser.close();
}
process.exit(code);
