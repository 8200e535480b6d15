// The typed client at work: generate an image, poll its progress, list the images.
//
//   node example.mjs                 # against `make dev` (http://127.0.0.1:3006), a new user
//   BASE_URL=… PICTURE_TOKEN=… node example.mjs "a prompt"
//
// Without PICTURE_TOKEN, a dev token is minted by the dev gateway (POST /dev/token) for
// PICTURE_USER_ID, else for a new user. Exits 1 if anything is not as the API promises.
// Type-checked against the generated schema by `npm run typecheck`.
import { createPictureClient } from "./index.js";

const baseUrl = process.env.BASE_URL ?? "http://127.0.0.1:3006";
const prompt = process.argv[2] ?? "a lighthouse at dawn, oil painting";
const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Stops with the problem document (RFC 9457) of a failed call.
 * @param {string} what
 * @param {{code?: string, detail?: string} | undefined} problem
 * @returns {never}
 */
function fail(what, problem) {
  console.error(`${what}: ${problem?.code ?? "?"}: ${problem?.detail ?? "no answer"}`);
  process.exit(1);
}

async function devToken() {
  const userId = process.env.PICTURE_USER_ID ?? crypto.randomUUID();
  const res = await fetch(`${baseUrl}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId }),
  });
  if (!res.ok) fail("POST /dev/token", await res.json());
  console.log(`user ${userId} (dev token)`);
  return /** @type {{token: string}} */ (await res.json()).token;
}

const picture = createPictureClient({ baseUrl, token: process.env.PICTURE_TOKEN ?? (await devToken()) });

// The catalog is public; the default model comes first.
const models = await picture.GET("/api/v1/models");
if (!models.data) fail("GET /models", models.error);
const model = models.data.find((m) => m.isDefault) ?? models.data[0];
console.log(`model ${model.displayName} (${model.id}), about ${model.estimatedTimeSeconds} s`);

const before = await picture.GET("/api/v1/credits/balance");
if (!before.data) fail("GET /credits/balance", before.error);
console.log(`free generations left: ${before.data.freeGenerationsRemaining}, credits: ${before.data.balance}`);

// Start it without waiting (202), with an idempotency key so that a retry cannot start a second one.
const started = await picture.POST("/api/v1/generate", {
  body: { prompt, modelId: model.id, waitForResult: false },
  params: { header: { "Idempotency-Key": crypto.randomUUID() } },
});
if (!started.data) fail("POST /generate", started.error);
const id = started.data.generationId;
console.log(`generation ${id}: ${started.data.status} (HTTP ${started.response.status}, charge ${started.data.charge})`);

// Poll the status: `progress` goes from 0 to 1 (null while nothing is known).
let generation;
const deadline = Date.now() + 120_000;
for (;;) {
  const status = await picture.GET("/api/v1/generate/{id}/status", { params: { path: { id } } });
  if (!status.data) fail("GET /generate/{id}/status", status.error);
  generation = status.data;
  const p = generation.progress;
  console.log(`  ${generation.status.padEnd(10)} ${p === null ? "   …" : `${Math.round(p * 100)}`.padStart(3) + " %"}`);
  if (!["pending", "processing"].includes(generation.status)) break;
  if (Date.now() > deadline) fail("polling", { code: "TIMEOUT", detail: "still open after 120 s" });
  await sleep(500);
}
if (generation.status !== "completed" || !generation.image) {
  fail(`generation ${generation.status}`, generation.error && { code: generation.error.code, detail: generation.error.message });
}
if (generation.progress !== 1) fail("progress", { code: "UNEXPECTED", detail: `completed with progress ${generation.progress}` });
const image = generation.image;
console.log(`image ${image.id}: ${image.width}×${image.height} ${image.format}, ${image.fileSize} bytes`);
console.log(`  url       ${image.url.slice(0, 80)}…`);
// The thumbnail and blurhash may come a moment after the image (null until then).
console.log(`  thumbnail ${image.thumbnailUrl ? `${image.thumbnailUrl.slice(0, 80)}…` : "(not made yet)"}, blurhash ${image.blurhash ?? "(not yet)"}`);

// The gallery, newest first: the new image leads it.
const page = await picture.GET("/api/v1/images", { params: { query: { limit: 5 } } });
if (!page.data) fail("GET /images", page.error);
console.log(`images (${page.data.data.length}${page.data.nextCursor ? ", more" : ""}):`);
for (const i of page.data.data) console.log(`  ${i.id} ${i.isFavorite ? "★" : "☆"} ${i.prompt.slice(0, 50)}`);
if (page.data.data[0]?.id !== image.id) fail("GET /images", { code: "UNEXPECTED", detail: "the new image is not first" });

// Errors are typed too: the problem document of the answer.
const missing = await picture.GET("/api/v1/images/{id}", { params: { path: { id: crypto.randomUUID() } } });
if (missing.data || missing.error?.code !== "IMAGE_NOT_FOUND") fail("GET /images/{unknown id}", missing.error);
console.log(`an unknown image: HTTP ${missing.response.status} ${missing.error.code} (${missing.error.detail})`);

const after = await picture.GET("/api/v1/credits/balance");
if (!after.data) fail("GET /credits/balance", after.error);
const used = before.data.freeGenerationsRemaining - after.data.freeGenerationsRemaining;
if (generation.charge === "free" && used !== 1) fail("free generations", { code: "UNEXPECTED", detail: `${used} used` });
console.log(`free generations left: ${after.data.freeGenerationsRemaining}, credits: ${after.data.balance}`);
console.log("example: ok");
