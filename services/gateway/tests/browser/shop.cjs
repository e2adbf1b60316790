// Drives the gateway's shop page in headless Chromium (Debian's `chromium`
// through npm's playwright-core), as a person would: open the page with the
// sign-in link `mesh up` prints, order one unit of the first item, and wait
// until the order shows up in "Your orders" as CONFIRMED. Prints one JSON
// line with what the page showed; writes a screenshot.
//
//   node shop.cjs <chromium> <page url> <user data dir> <screenshot path>
const { chromium } = require("playwright-core");

async function main() {
  const [executablePath, url, userDataDir, screenshot] = process.argv.slice(2);
  if (!screenshot) {
    throw new Error("usage: shop.cjs <chromium> <page url> <user data dir> <screenshot path>");
  }
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(url, { waitUntil: "networkidle", timeout: 30000 });
    const items = await page.$$eval("#items tbody tr", (rows) =>
      rows.map((row) => Array.from(row.cells).map((cell) => cell.textContent.trim())),
    );
    const before = await page.$$eval("#orders tbody tr", (rows) => rows.length);
    await page.click("#items tbody tr:first-child button");
    await page.waitForSelector(`#orders tbody tr:nth-child(${before + 1})`, { timeout: 30000 });
    await page.waitForLoadState("networkidle");
    const orders = await page.$$eval("#orders tbody tr", (rows) =>
      rows.map((row) => ({ id: row.dataset.orderId, status: row.dataset.status })),
    );
    const message = await page.textContent("#message");
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ items, before, orders, message, errors }));
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
