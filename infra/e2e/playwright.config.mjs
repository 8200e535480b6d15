// Playwright drives Debian's chromium (/usr/bin/chromium): Playwright's own browser
// downloads are not reachable here (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 when installing).
// BASE_URL is the dev gateway under test (infra/scripts/e2e.sh starts one on :3036).
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  timeout: 90_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: "../../.dev/e2e/test-results",
  use: {
    baseURL: process.env.BASE_URL || "http://127.0.0.1:3006",
    viewport: { width: 1280, height: 900 },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      // As root, without a sandbox; no background traffic to hosts this machine cannot reach.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
