// Takes the README's Consul UI screenshots with headless Chromium (Debian's
// `chromium`, driven by npm's playwright-core). Called by scripts/screenshots/run
// with: <consul host:port> <out dir> <service> <node> <service id>.
//
// The Consul 1.8 UI is a single-page app that renders only after its API calls
// are answered: wait until the page's network is idle, then ~2 s more for the
// rendering, before each screenshot.
const { chromium } = require("playwright-core");

async function main() {
  const [consul, outDir, service, node, serviceId] = process.argv.slice(2);
  if (!serviceId) {
    throw new Error("usage: capture.cjs <consul host:port> <out dir> <service> <node> <service id>");
  }
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const shots = [
      ["consul-services.png", "/ui/dc1/services"],
      [
        "consul-grpc-check.png",
        `/ui/dc1/services/${service}/instances/${node}/${serviceId}/health-checks`,
      ],
    ];
    for (const [file, path] of shots) {
      await page.goto(`http://${consul}${path}`, { waitUntil: "networkidle" });
      await page.waitForTimeout(2000);
      await page.screenshot({ path: `${outDir}/${file}` });
      console.log(`${outDir}/${file}`);
    }
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
