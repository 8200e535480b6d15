// The API reference at `/docs` (Redoc, built from docs/openapi.yaml) and the
// document itself at `/openapi.yaml`.
import { readFileSync } from "node:fs";
import { test, expect } from "@playwright/test";
import { parse } from "yaml";

const DOCUMENT = new URL("../../../docs/openapi.yaml", import.meta.url);
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** Every operation of the document, as "METHOD /path". */
function operations() {
  const doc = parse(readFileSync(DOCUMENT, "utf8"));
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

test("the reference lists every route of docs/openapi.yaml", async ({ page }) => {
  const expected = operations();
  expect(expected.length).toBeGreaterThan(10);
  const res = await page.goto("/docs");
  expect(res.status()).toBe(200);
  await expect(page.getByRole("heading", { name: /Picture API/ })).toBeVisible();
  // Redoc renders sections as they come into view (and may drop those far behind):
  // scroll to the end, collecting every "METHOD" line followed by a "/path" line of
  // the text rendered on the way.
  const found = new Set();
  const shown = async () => {
    const lines = (await page.locator("body").innerText()).split("\n").map((l) => l.trim());
    lines.forEach((line, i) => {
      if (METHODS.includes(line.toLowerCase()) && lines[i + 1]?.startsWith("/")) found.add(`${line.toUpperCase()} ${lines[i + 1]}`);
    });
    return [...found];
  };
  await expect
    .poll(async () => {
      await page.mouse.wheel(0, 4000);
      return (await shown()).sort();
    }, { timeout: 30_000, intervals: [200] })
    .toEqual([...expected].sort());
});

test("/openapi.yaml is the document as it is", async ({ request }) => {
  const res = await request.get("/openapi.yaml");
  expect(res.status()).toBe(200);
  expect(res.headers()["content-type"]).toContain("yaml");
  expect(await res.text()).toBe(readFileSync(DOCUMENT, "utf8"));
});
