// The viewer's first paint, measured in headless Chromium: run by benches/first_paint.rs
// (not a test: nothing here asserts a time). For each load, a fresh browser context (no
// cache, no session) opens BASE/ and reports, from the navigation's start: the first
// contentful paint, when the table's first row is in the page, and when the histogram's
// first bar is. Prints one JSON line per load.
import { chromium } from "playwright-core";

const [base, loads] = [process.argv[2], Number(process.argv[3] || 5)];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    // Injected through the DevTools protocol, so the page's CSP does not apply to it.
    await context.addInitScript(() => {
      window.__seen = {};
      new MutationObserver(() => {
        const s = window.__seen;
        if (!s.row && document.querySelector("#results tbody tr")) s.row = performance.now();
        if (!s.bar && document.querySelector("#histogram rect")) s.bar = performance.now();
      }).observe(document, { subtree: true, childList: true });
    });
    const page = await context.newPage();
    await page.goto(base + "/");
    const deadline = Date.now() + 60_000;
    let seen;
    for (;;) {
      seen = await page.evaluate(() => ({
        ...window.__seen,
        fcp: performance.getEntriesByName("first-contentful-paint")[0]?.startTime,
      }));
      if (seen.row && seen.bar && seen.fcp) break;
      if (Date.now() > deadline) throw new Error("the page did not draw within 60 s: " + JSON.stringify(seen));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    console.log(JSON.stringify(seen));
    await context.close();
  }
} finally {
  await browser.close();
}
