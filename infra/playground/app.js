// The playground: the public API (/api/v1) called as a client app would, with a
// dev token that the dev gateway mints (POST /dev/token). No framework, no build.
import { paint } from "/playground/blurhash.mjs";

const API = "/api/v1";
const POLL_MS = 400;
const PAGE_SIZE = 12;
const $ = (id) => document.getElementById(id);

const state = {
  userId: null,
  token: null,
  models: [],
  generationId: null, // the open generation, while polling
  cursor: null,
  images: new Map(), // id -> Image, as the gallery shows them
  viewing: null, // the Image in the viewer
  epoch: 0, // counts gallery reloads
};

// ---------------------------------------------------------------- requests

/** A problem document (RFC 9457) from the API, or one made up for a network failure. */
class Problem extends Error {
  constructor(status, body, requestId) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.requestId = requestId;
  }
}

/**
 * Calls the API: JSON in and out, the bearer token, an `Idempotency-Key` when asked.
 * Returns the parsed body (null for 204); throws a Problem for any error answer.
 */
async function api(method, path, { body, idempotent = false, auth = true } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (auth && state.token) headers.authorization = `Bearer ${state.token}`;
  if (idempotent) headers["idempotency-key"] = crypto.randomUUID();
  const url = path.startsWith("/dev/") ? path : API + path;
  const started = performance.now();
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    log(method, url, "network error", started);
    throw new Problem(0, { code: "NETWORK_ERROR", detail: String(e) });
  }
  log(method, url, res.status, started);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!res.ok) throw new Problem(res.status, data, res.headers.get("x-request-id"));
  return data;
}

function log(method, url, status, started) {
  const li = document.createElement("li");
  const ms = Math.round(performance.now() - started);
  li.textContent = `${method} ${url.replace(/\?.*/, (q) => (q.length > 60 ? "?…" : q))} → ${status} (${ms} ms)`;
  if (typeof status !== "number" || status >= 400) li.className = "bad";
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 40) list.lastChild.remove();
}

function showError(e) {
  const p = e instanceof Problem ? e.body : { code: "ERROR", detail: String(e?.message || e) };
  $("error-code").textContent = p.code || "ERROR";
  $("error-status").textContent = e instanceof Problem && e.status ? `HTTP ${e.status}${p.title ? ` · ${p.title}` : ""}` : "";
  $("error-detail").textContent = p.detail || "";
  const fields = $("error-fields");
  fields.replaceChildren(
    ...(p.errors || []).map((f) => {
      const li = document.createElement("li");
      li.innerHTML = "<code></code>: <span></span>";
      li.firstChild.textContent = f.field;
      li.lastChild.textContent = f.message;
      return li;
    }),
  );
  const extra = ["required", "balance", "freeGenerationsRemaining", "term", "categories"]
    .filter((k) => p[k] !== undefined)
    .map((k) => `${k}: ${JSON.stringify(p[k])}`);
  if (e instanceof Problem && e.requestId) extra.push(`x-request-id: ${e.requestId}`);
  $("error-request").textContent = extra.join(" · ");
  $("error").hidden = false;
}

const clearError = () => ($("error").hidden = true);

/** Runs an action, showing its error (if any) in the problem box. */
const guarded = (action) => async (...args) => {
  try {
    return await action(...args);
  } catch (e) {
    showError(e);
  }
};

// ---------------------------------------------------------------- user and credits

async function useUser(userId) {
  clearError();
  const { token, expiresIn } = await api("POST", "/dev/token", { body: { userId }, auth: false });
  state.userId = userId;
  state.token = token;
  localStorage.setItem("picture.userId", userId);
  $("user-id").value = userId;
  $("token-info").textContent = `Signed in as ${userId} (dev token, valid ${Math.round(expiresIn / 3600)} h).`;
  document.body.dataset.user = userId;
  $("result").hidden = true;
  setProgress(0, "–");
  $("generation-status").textContent = "";
  await Promise.all([refreshBalance(), loadPacks(), loadGallery(true)]);
}

async function refreshBalance() {
  const b = await api("GET", "/credits/balance");
  $("free-left").value = b.freeGenerationsRemaining;
  $("free-limit").textContent = b.freeGenerationsLimit;
  $("balance").value = b.balance;
  $("per-generation").textContent = b.creditsPerGeneration;
  if ($("ledger-box").open) await loadLedger();
}

async function loadLedger() {
  const page = await api("GET", "/credits/transactions?limit=10");
  $("ledger").replaceChildren(
    ...page.data.map((t) => {
      const li = document.createElement("li");
      li.textContent = `${new Date(t.createdAt).toLocaleString()} · ${t.kind} ${t.delta > 0 ? "+" : ""}${t.delta} · ${t.description}`;
      return li;
    }),
  );
  if (!page.data.length) $("ledger").innerHTML = "<li class=muted>No entries.</li>";
}

async function loadPacks() {
  const packs = await api("GET", "/credits/packs");
  const list = $("pack-list");
  list.replaceChildren(
    ...packs.map((pack) => {
      const button = document.createElement("button");
      button.type = "button";
      const price = new Intl.NumberFormat(undefined, { style: "currency", currency: pack.currency.toUpperCase() })
        .format(pack.priceCents / 100);
      button.textContent = `Buy ${pack.name} · ${price}`;
      button.title = `${pack.credits} credits (${pack.id})`;
      button.dataset.pack = pack.id;
      button.addEventListener("click", guarded(() => buy(pack)));
      return button;
    }),
  );
  if (!packs.length) list.innerHTML = "<p class=muted>Credits are not sold here (<code>CREDITS_PROVIDER=manacore</code>).</p>";
}

/** Starts a Stripe Checkout for the pack and sends the browser to its payment page. */
async function buy(pack) {
  clearError();
  const checkout = await api("POST", "/credits/checkout", { body: { packId: pack.id }, idempotent: true });
  $("checkout-status").textContent = `Checkout ${checkout.sessionId} open: going to the payment page…`;
  location.assign(checkout.checkoutUrl);
}

/** Back from the payment page (`/?checkout={sessionId}` or `/?checkout=cancelled`): follows the purchase. */
async function followCheckout(sessionId) {
  history.replaceState(null, "", location.pathname);
  const status = $("checkout-status");
  if (sessionId === "cancelled") {
    status.textContent = "Checkout cancelled: nothing was charged.";
    return;
  }
  for (let i = 0; i < 40; i++) {
    const c = await api("GET", `/credits/checkout/${encodeURIComponent(sessionId)}`);
    status.textContent = `Purchase ${c.sessionId} (${c.credits} credits): ${c.status}`;
    status.dataset.status = c.status;
    if (["granted", "expired", "failed"].includes(c.status)) break;
    await sleep(500);
  }
  await refreshBalance();
}

// ---------------------------------------------------------------- models and generating

async function loadModels() {
  state.models = await api("GET", "/models", { auth: false });
  $("model").replaceChildren(
    ...state.models.map((m) => {
      const option = new Option(`${m.displayName}${m.isDefault ? " (default)" : ""}`, m.id, m.isDefault, m.isDefault);
      return option;
    }),
  );
  modelChanged();
}

const currentModel = () => state.models.find((m) => m.id === $("model").value);

function modelChanged() {
  const m = currentModel();
  if (!m) return;
  $("model-info").textContent =
    `${m.description} ${m.defaultWidth}×${m.defaultHeight} by default, ` +
    `${m.minWidth}–${m.maxWidth} wide; about ${m.estimatedTimeSeconds} s` +
    `${m.supportsImg2Img ? "; image-to-image" : ""}.`;
  $("negative-box").hidden = !m.supportsNegativePrompt;
  $("source-box").hidden = !m.supportsImg2Img;
  for (const [id, value] of [["width", m.defaultWidth], ["height", m.defaultHeight], ["steps", m.defaultSteps]]) {
    $(id).placeholder = String(value);
  }
}

function setProgress(value, label) {
  const bar = $("progress");
  if (value === null) bar.removeAttribute("value"); // indeterminate
  else bar.value = Math.round(value * 100);
  $("progress-text").value = label;
}

function showProgress(p) {
  if (p === null || p === undefined) {
    setProgress(null, "waiting…");
    return;
  }
  const percent = Math.round(p * 100);
  setProgress(p, `${percent} %`);
  const seen = ($("progress").dataset.seen || "").split(",").filter(Boolean);
  if (seen.at(-1) !== String(percent)) seen.push(String(percent));
  $("progress").dataset.seen = seen.join(",");
}

/** A number field's value: undefined when empty, the number when it parses, else the text (the API says what is wrong). */
function numberField(id) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw;
}

async function uploadSource(file) {
  const status = $("upload-status");
  status.textContent = `Uploading ${file.name} (${file.size} bytes)…`;
  const upload = await api("POST", "/uploads", { body: { contentType: file.type, contentLength: file.size } });
  // The signed headers, less the length that the browser sets itself from the body.
  const headers = Object.fromEntries(Object.entries(upload.headers).filter(([k]) => k.toLowerCase() !== "content-length"));
  let res, how = "directly";
  try {
    res = await fetch(upload.uploadUrl, { method: upload.method, headers, body: file });
  } catch {
    // The local S3 server answers no CORS preflight: the dev gateway sends the same request on.
    how = "through the dev gateway's relay (the local S3 server answers no CORS preflight)";
    res = await fetch(`/dev/s3-relay?url=${encodeURIComponent(upload.uploadUrl)}`, { method: upload.method, headers, body: file });
  }
  if (!res.ok) {
    const detail = (await res.text()).slice(0, 300);
    throw new Problem(res.status, { code: "UPLOAD_FAILED", detail: `S3 answered ${res.status}: ${detail}` });
  }
  status.textContent = `Uploaded as ${upload.id}, ${how}.`;
  return upload.id;
}

async function generate(event) {
  event.preventDefault();
  clearError();
  if (!state.token) throw new Problem(0, { code: "NO_USER", detail: "Choose a user first." });
  const m = currentModel();
  const sync = document.querySelector("input[name=mode]:checked").value === "sync";
  const body = { prompt: $("prompt").value, modelId: m?.id, waitForResult: sync };
  if (m?.supportsNegativePrompt && $("negative-prompt").value.trim()) body.negativePrompt = $("negative-prompt").value;
  for (const id of ["width", "height", "steps", "seed"]) {
    const v = numberField(id);
    if (v !== undefined) body[id] = v;
  }
  busy(true);
  $("result").hidden = true;
  $("progress").dataset.seen = "";
  try {
    const file = m?.supportsImg2Img ? $("source-file").files[0] : undefined;
    if (file) {
      body.sourceImageId = await uploadSource(file);
      body.generationStrength = Number($("strength").value);
    }
    setProgress(sync ? null : 0, sync ? "waiting for the result…" : "starting…");
    const result = await api("POST", "/generate", { body, idempotent: true });
    state.generationId = result.generationId;
    $("cancel").disabled = false;
    $("free-left").value = result.freeGenerationsRemaining;
    await follow(result);
  } finally {
    state.generationId = null;
    busy(false);
  }
}

/** Shows a generation (GenerateResult or Generation) and polls its status until it ends. */
async function follow(g) {
  const id = g.generationId;
  showGeneration(g);
  let retries = 0;
  while (["pending", "processing"].includes(g.status)) {
    await sleep(POLL_MS);
    if (state.generationId !== id) return; // cancelled: cancel() shows the outcome
    let next;
    try {
      next = await api("GET", `/generate/${id}/status`);
    } catch (e) {
      // A busy or rate-limited moment is not the generation's end: ask again a few times.
      if (!(e instanceof Problem && [429, 502, 503].includes(e.status)) || ++retries > 5) throw e;
      continue;
    }
    if (state.generationId !== id) return;
    g = next;
    showGeneration(g);
  }
  await Promise.all([refreshBalance(), g.status === "completed" ? loadGallery(true) : null]);
}

function showGeneration(g) {
  showProgress(g.progress);
  const status = $("generation-status");
  status.dataset.status = g.status;
  status.textContent = `Generation ${g.generationId}: ${g.status}` +
    (g.charge ? ` · charge ${g.charge}${g.creditsUsed ? ` (${g.creditsUsed} credits)` : ""}` : "") +
    (g.error ? ` · ${g.error.code}: ${g.error.message}` : "");
  if (g.status === "completed" && g.image) {
    const img = $("result-image");
    img.src = g.image.url;
    img.alt = g.image.prompt;
    img.dataset.imageId = g.image.id;
    $("result-caption").textContent = `${g.image.width}×${g.image.height} ${g.image.format}, ${formatBytes(g.image.fileSize)}`;
    $("result").hidden = false;
  }
}

async function cancel() {
  clearError();
  const id = state.generationId;
  if (!id) return;
  state.generationId = null; // stops the polling loop
  const g = await api("DELETE", `/generate/${id}`);
  showGeneration(g);
  await refreshBalance();
}

function busy(on) {
  $("generate").disabled = on;
  $("cancel").disabled = true;
  document.body.classList.toggle("busy", on);
}

// ---------------------------------------------------------------- gallery

async function loadGallery(reset) {
  if (reset) {
    state.epoch = (state.epoch || 0) + 1;
    state.cursor = null;
    state.images.clear();
    $("gallery").replaceChildren();
  }
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("favorites-only").checked) query.set("favorites", "true");
  if (state.cursor) query.set("cursor", state.cursor);
  const page = await api("GET", `/images?${query}`);
  for (const image of page.data) {
    state.images.set(image.id, image);
    $("gallery").append(card(image));
    if (awaitsThumbnail(image)) upgradeWhenThumbnailed(image.id);
  }
  state.cursor = page.nextCursor;
  $("more").hidden = !page.nextCursor;
  $("gallery-empty").hidden = state.images.size > 0;
}

/**
 * A new image may come before its thumbnail (made after the generation completed): the card
 * shows the image itself meanwhile. Decodable formats only; older images are left as they are.
 */
const awaitsThumbnail = (image) =>
  !image.thumbnailUrl && ["png", "jpg", "webp"].includes(image.format) && Date.now() - Date.parse(image.createdAt) < 120_000;

/** Asks for the image again now and then until it has a thumbnail, then redraws its card. */
async function upgradeWhenThumbnailed(id) {
  const epoch = state.epoch;
  for (let i = 0; i < 20; i++) {
    await sleep(750);
    if (state.epoch !== epoch || !cardOf(id)) return; // the gallery was reloaded, or the image deleted
    let image;
    try {
      image = await api("GET", `/images/${id}`);
    } catch {
      continue;
    }
    if (state.epoch !== epoch) return;
    if (image.thumbnailUrl) {
      state.images.set(id, image);
      cardOf(id)?.replaceWith(card(image));
      return;
    }
  }
}

/** A gallery card: the BlurHash placeholder until the thumbnail has loaded. */
function card(image) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.dataset.imageId = image.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "thumb";
  open.setAttribute("aria-label", `Open: ${image.prompt}`);
  open.style.aspectRatio = `${image.width} / ${image.height}`;
  if (image.blurhash) {
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = Math.max(1, Math.round((32 * image.height) / image.width));
    canvas.className = "blurhash";
    try {
      paint(canvas, image.blurhash);
      canvas.dataset.painted = "true";
    } catch (e) {
      canvas.title = String(e.message);
    }
    open.append(canvas);
  }
  const img = document.createElement("img");
  img.alt = image.prompt;
  img.loading = "lazy";
  img.decoding = "async";
  img.addEventListener("load", () => figure.classList.add("loaded"));
  img.src = image.thumbnailUrl || image.url;
  open.append(img);
  open.addEventListener("click", () => view(image.id));
  const caption = document.createElement("figcaption");
  caption.textContent = image.prompt;
  const fav = document.createElement("button");
  fav.type = "button";
  fav.className = "fav";
  fav.addEventListener("click", guarded(() => favorite(image.id)));
  figure.append(open, caption, fav);
  markFavorite(figure, image.isFavorite);
  return figure;
}

function markFavorite(figure, on) {
  const fav = figure.querySelector(".fav");
  fav.textContent = on ? "★" : "☆";
  fav.setAttribute("aria-pressed", String(on));
  fav.setAttribute("aria-label", on ? "Unfavourite" : "Favourite");
  figure.classList.toggle("favorite", on);
}

const cardOf = (id) => document.querySelector(`.card[data-image-id="${CSS.escape(id)}"]`);

async function favorite(id) {
  clearError();
  const image = state.images.get(id);
  const updated = await api("PATCH", `/images/${id}`, { body: { isFavorite: !image.isFavorite } });
  state.images.set(id, updated);
  const figure = cardOf(id);
  if (figure) markFavorite(figure, updated.isFavorite);
  if (state.viewing?.id === id) showViewer(updated);
  if ($("favorites-only").checked && !updated.isFavorite) figure?.remove();
}

async function remove(id) {
  clearError();
  await api("DELETE", `/images/${id}`);
  state.images.delete(id);
  cardOf(id)?.remove();
  $("gallery-empty").hidden = state.images.size > 0;
  if ($("result-image").dataset.imageId === id) $("result").hidden = true;
  $("viewer").close();
}

/** Opens an image: fetched again (GET /images/{id}), so that its URLs are fresh. */
async function view(id) {
  clearError();
  const image = await api("GET", `/images/${id}`);
  state.images.set(id, image);
  showViewer(image);
  if (!$("viewer").open) $("viewer").showModal();
}

function showViewer(image) {
  state.viewing = image;
  $("viewer").dataset.imageId = image.id;
  $("viewer-image").src = image.url;
  $("viewer-image").alt = image.prompt;
  $("viewer-open").href = image.url;
  const fav = $("viewer-favorite");
  fav.textContent = image.isFavorite ? "★ Favourite" : "☆ Favourite";
  fav.setAttribute("aria-pressed", String(image.isFavorite));
  const rows = [
    ["Prompt", image.prompt],
    ["Negative prompt", image.negativePrompt],
    ["Model", image.model],
    ["Size", `${image.width}×${image.height} ${image.format}, ${formatBytes(image.fileSize)}`],
    ["Created", new Date(image.createdAt).toLocaleString()],
    ["BlurHash", image.blurhash],
    ["Id", image.id],
  ].filter(([, v]) => v);
  $("viewer-meta").replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }),
  );
}

// ---------------------------------------------------------------- helpers and start

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.max(1, Math.round(n / 1024))} KiB`;
}

function bind() {
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(useUser)($("user-id").value.trim());
  });
  $("new-user").addEventListener("click", guarded(() => useUser(crypto.randomUUID())));
  $("model").addEventListener("change", modelChanged);
  $("generate-form").addEventListener("submit", guarded(generate));
  $("cancel").addEventListener("click", guarded(cancel));
  $("strength").addEventListener("input", () => ($("strength-value").value = $("strength").value));
  $("favorites-only").addEventListener("change", guarded(() => loadGallery(true)));
  $("reload-gallery").addEventListener("click", guarded(() => loadGallery(true)));
  $("more").addEventListener("click", guarded(() => loadGallery(false)));
  $("viewer-favorite").addEventListener("click", guarded(() => favorite(state.viewing.id)));
  $("viewer-delete").addEventListener("click", guarded(() => remove(state.viewing.id)));
  $("ledger-box").addEventListener("toggle", guarded(() => $("ledger-box").open && loadLedger()));
  document.querySelector("#error .dismiss").addEventListener("click", clearError);
}

async function start() {
  bind();
  await guarded(loadModels)();
  const saved = new URLSearchParams(location.search).get("user") || localStorage.getItem("picture.userId");
  if (saved) await guarded(useUser)(saved);
  const checkout = new URLSearchParams(location.search).get("checkout");
  if (checkout && state.token) await guarded(followCheckout)(checkout);
  document.body.dataset.ready = "true";
}

start();
