// The playground at `/`, driven as a developer would drive it, with what the
// page shows checked against what the API says.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { test, expect } from "@playwright/test";
import { apiAs, newUser, watchPageErrors } from "./helpers.mjs";

// The Replicate simulator takes this long over the prediction (prompt marker), so
// that the status is polled several times while the progress rises.
const SLOW = "[sim:slow=3000]";

test("a new user generates, follows the progress to 100 %, sees image and thumbnail, favourites and deletes it", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  const api = await apiAs(request, userId);
  await expect(page.locator("#free-left")).toHaveText("3");
  await expect(page.locator("#gallery-empty")).toBeVisible();

  await page.getByLabel("Prompt", { exact: true }).fill(`a lighthouse at dawn ${SLOW}`);
  await expect(page.getByLabel("Async (poll the status)")).toBeChecked();
  await page.getByRole("button", { name: "Generate" }).click();

  // Progress: seen rising while the status is polled, and ending at 100 %.
  await expect(page.locator("#progress-text")).toHaveText("100 %", { timeout: 30_000 });
  await expect(page.locator("#generation-status")).toHaveAttribute("data-status", "completed");
  const seen = (await page.locator("#progress").getAttribute("data-seen")).split(",").map(Number);
  expect(seen.at(-1)).toBe(100);
  expect(seen.some((p) => p > 0 && p < 100), `progress seen: ${seen}`).toBe(true);
  expect([...seen].sort((a, b) => a - b), "progress never goes back").toEqual(seen);
  expect(await page.locator("#progress").evaluate((el) => el.value)).toBe(100);

  // The API agrees: one image, with a thumbnail and a blurhash (made once the image is
  // stored: they may come a moment later); one free generation used.
  let image;
  await expect
    .poll(async () => {
      const images = await api.get("/images");
      expect(images.status).toBe(200);
      expect(images.body.data).toHaveLength(1);
      image = images.body.data[0];
      return Boolean(image.thumbnailUrl && image.blurhash);
    })
    .toBe(true);
  expect(image.prompt).toContain("a lighthouse at dawn");
  expect(image.thumbnailUrl).toBeTruthy();
  expect(image.blurhash).toBeTruthy();
  await expect(page.locator("#free-left")).toHaveText("2");
  expect((await api.get("/credits/balance")).body.freeGenerationsRemaining).toBe(2);

  // The result: the full image, decoded at its size.
  const result = page.locator("#result-image");
  await expect(result).toBeVisible();
  await expect(result).toHaveAttribute("data-image-id", image.id);
  await expect.poll(() => result.evaluate((img) => img.complete && img.naturalWidth)).toBe(image.width);

  // The gallery: a card whose BlurHash placeholder was painted, then the thumbnail (≤ 384 px) loaded over it.
  const card = page.locator(`.card[data-image-id="${image.id}"]`);
  await expect(card).toHaveCount(1);
  await expect(card.locator("canvas.blurhash")).toHaveAttribute("data-painted", "true");
  const thumb = card.locator("img");
  // (Presigned URLs differ from one answer to the next in their query only.)
  const path = (url) => new URL(url).pathname;
  expect(path(await thumb.getAttribute("src"))).toBe(path(image.thumbnailUrl));
  expect(path(image.thumbnailUrl)).not.toBe(path(image.url));
  await expect(card).toHaveClass(/loaded/);
  const thumbSize = await thumb.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  expect(Math.max(...thumbSize)).toBeGreaterThan(0);
  expect(Math.max(...thumbSize)).toBeLessThanOrEqual(384);
  expect(thumbSize[0] / thumbSize[1]).toBeCloseTo(image.width / image.height, 1);
  // The placeholder's colours are the image's: not a blank canvas.
  const painted = await card.locator("canvas.blurhash").evaluate((c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let opaque = 0, distinct = new Set();
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] === 255) opaque++;
      distinct.add(`${d[i] >> 4},${d[i + 1] >> 4},${d[i + 2] >> 4}`);
    }
    return { opaque, pixels: d.length / 4, distinct: distinct.size };
  });
  expect(painted.opaque).toBe(painted.pixels);
  expect(painted.distinct).toBeGreaterThan(1);

  // The screenshot the README shows.
  const shot = process.env.SCREENSHOT_PATH;
  if (shot) {
    mkdirSync(dirname(shot), { recursive: true });
    await page.locator("#user-id").evaluate((el) => el.blur());
    await page.screenshot({ path: shot, fullPage: true });
  }

  // Open it, favourite it.
  await card.getByRole("button", { name: /^Open:/ }).click();
  const viewer = page.locator("#viewer");
  await expect(viewer).toBeVisible();
  await expect(viewer).toHaveAttribute("data-image-id", image.id);
  await expect.poll(() => page.locator("#viewer-image").evaluate((img) => img.complete && img.naturalWidth)).toBe(image.width);
  await expect(page.locator("#viewer-meta")).toContainText(image.blurhash);
  const favorite = page.locator("#viewer-favorite");
  await expect(favorite).toHaveAttribute("aria-pressed", "false");
  await favorite.click();
  await expect(favorite).toHaveAttribute("aria-pressed", "true");
  await expect(card.locator(".fav")).toHaveText("★");
  expect((await api.get(`/images/${image.id}`)).body.isFavorite).toBe(true);
  const favorites = await api.get("/images?favorites=true");
  expect(favorites.body.data.map((i) => i.id)).toEqual([image.id]);

  // Delete it: gone from the page and from the API.
  await page.getByRole("button", { name: "Delete" }).click();
  await expect(viewer).toBeHidden();
  await expect(card).toHaveCount(0);
  await expect(page.locator("#gallery-empty")).toBeVisible();
  const gone = await api.get(`/images/${image.id}`);
  expect(gone.status).toBe(404);
  expect(gone.body.code).toBe("IMAGE_NOT_FOUND");
  expect((await api.get("/images")).body.data).toEqual([]);
  // Deleting an image gives no free generation back.
  await page.getByRole("button", { name: "Reload" }).click();
  await expect(page.locator("#free-left")).toHaveText("2");
  await expect(page.locator("#error")).toBeHidden();
  noPageErrors();
});

test("a synchronous generation answers with the image at once", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  await page.getByLabel("Prompt", { exact: true }).fill("a red bicycle in the rain");
  await page.getByLabel("Sync (waitForResult)").check();
  const answer = page.waitForResponse((r) => r.url().endsWith("/api/v1/generate") && r.request().method() === "POST");
  await page.getByRole("button", { name: "Generate" }).click();
  const res = await answer;
  expect(res.status()).toBe(201);
  const body = await res.json();
  expect(body.status).toBe("completed");
  await expect(page.locator("#progress-text")).toHaveText("100 %");
  await expect(page.locator("#result-image")).toHaveAttribute("data-image-id", body.image.id);
  await expect(page.locator("#free-left")).toHaveText("2");
  const api = await apiAs(request, userId);
  expect((await api.get(`/generate/${body.generationId}/status`)).body.status).toBe("completed");
  noPageErrors();
});

test("cancelling an open generation releases its hold", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  await page.getByLabel("Prompt", { exact: true }).fill("a tower that never finishes [sim:hang]");
  await page.getByRole("button", { name: "Generate" }).click();
  await expect(page.locator("#generation-status")).toHaveAttribute("data-status", /pending|processing/);
  const cancel = page.getByRole("button", { name: "Cancel" });
  await expect(cancel).toBeEnabled();
  await cancel.click();
  await expect(page.locator("#generation-status")).toHaveAttribute("data-status", "cancelled");
  await expect(page.getByRole("button", { name: "Generate" })).toBeEnabled();
  await expect(page.locator("#free-left")).toHaveText("3");
  const api = await apiAs(request, userId);
  const history = await api.get("/generate/history");
  expect(history.body.data.map((g) => g.status)).toEqual(["cancelled"]);
  expect((await api.get("/credits/balance")).body.freeGenerationsRemaining).toBe(3);
  noPageErrors();
});

test("an error shows the problem's code and detail", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  await page.getByLabel("Prompt", { exact: true }).fill("too narrow");
  await page.locator("details", { hasText: "Options" }).locator("summary").click();
  await page.getByLabel("Width").fill("100");
  await page.getByRole("button", { name: "Generate" }).click();
  const error = page.getByRole("alert");
  await expect(error).toBeVisible();
  await expect(page.locator("#error-code")).toHaveText("VALIDATION_FAILED");
  await expect(page.locator("#error-status")).toContainText("HTTP 400");
  await expect(page.locator("#error-detail")).toHaveText("1 field is invalid.");
  await expect(page.locator("#error-fields")).toContainText("width");
  await expect(page.locator("#error-request")).toContainText("x-request-id");
  // Nothing was started or charged.
  await expect(page.locator("#free-left")).toHaveText("3");
  const api = await apiAs(request, userId);
  expect((await api.get("/generate/history")).body.total).toBe(0);
  await page.locator("#error .dismiss").click();
  await expect(error).toBeHidden();
  noPageErrors();
});

test("image-to-image from an uploaded source", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  const api = await apiAs(request, userId);
  const models = (await api.get("/models")).body;
  const img2img = models.find((m) => m.supportsImg2Img);
  expect(img2img, "a model that supports image-to-image").toBeTruthy();
  await page.getByLabel("Model").selectOption(img2img.id);
  await expect(page.locator("#source-box")).toBeVisible();
  // A real PNG: a screenshot of part of the page.
  const png = await page.screenshot({ clip: { x: 0, y: 0, width: 320, height: 240 } });
  await page.getByLabel("Source image (image-to-image)").setInputFiles({ name: "source.png", mimeType: "image/png", buffer: png });
  await page.getByLabel("Prompt", { exact: true }).fill("the same, as a watercolour");
  await page.getByRole("button", { name: "Generate" }).click();
  await expect(page.locator("#upload-status")).toContainText("Uploaded as");
  await expect(page.locator("#generation-status")).toHaveAttribute("data-status", "completed", { timeout: 30_000 });
  await expect(page.locator("#result")).toBeVisible();
  const [generation] = (await api.get("/generate/history")).body.data;
  expect(generation.status).toBe("completed");
  expect(generation.modelId).toBe(img2img.id);
  noPageErrors();
});

test("buying a pack through the Stripe simulator grants its credits", async ({ page, request }) => {
  const noPageErrors = watchPageErrors(page);
  const userId = await newUser(page);
  const api = await apiAs(request, userId);
  const packs = (await api.get("/credits/packs")).body;
  test.skip(packs.length === 0, "credits are not sold here");
  const pack = packs[0];
  await expect(page.locator("#balance")).toHaveText("0");
  await page.locator(`#pack-list button[data-pack="${pack.id}"]`).click();
  // Stripe's hosted page (the simulator's), then back to the playground.
  await expect(page.getByRole("heading", { name: "stripe-sim checkout" })).toBeVisible();
  await page.getByRole("button", { name: "Pay", exact: true }).click();
  await expect(page.locator("#checkout-status")).toHaveAttribute("data-status", "granted");
  await expect(page).toHaveURL(/\/$/);
  await expect(page.locator("#balance")).toHaveText(String(pack.credits));
  const balance = (await api.get("/credits/balance")).body;
  expect(balance.balance).toBe(pack.credits);
  const ledger = (await api.get("/credits/transactions")).body.data;
  expect(ledger.map((t) => [t.kind, t.delta])).toEqual([["purchase", pack.credits]]);
  noPageErrors();
});
