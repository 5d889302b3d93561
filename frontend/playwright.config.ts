import { defineConfig } from "@playwright/test";

/**
 * End-to-end tests against a running ClinVault (`tests/ui/test_e2e.py` starts one on the
 * sample platform and sets CLINVAULT_E2E_URL). The browser is the system's Chromium: no
 * browser is downloaded.
 */
const baseURL = process.env.CLINVAULT_E2E_URL ?? "http://127.0.0.1:8470";
const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export default defineConfig({
  testDir: "e2e",
  outputDir: "../test-artifacts/playwright",
  timeout: 240_000,
  expect: { timeout: 15_000 },
  workers: 1,
  fullyParallel: false,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL,
    headless: true,
    viewport: { width: 1360, height: 900 },
    acceptDownloads: true,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    timezoneId: "UTC",
    launchOptions: {
      executablePath,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--no-default-browser-check",
      ],
    },
  },
});
