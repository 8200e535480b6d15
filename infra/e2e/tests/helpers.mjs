// What the browser tests check behind the page's back: the API itself, as the
// user the page signed in (a token from the same dev route).
import { expect } from "@playwright/test";

/** The public API as `userId`: `get`, `call` (any method), each answering {status, body}. */
export async function apiAs(request, userId) {
  const res = await request.post("/dev/token", { data: { userId } });
  expect(res.status()).toBe(200);
  const { token } = await res.json();
  const call = async (method, path, data) => {
    const r = await request.fetch(`/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      data,
    });
    const text = await r.text();
    return { status: r.status(), body: text ? JSON.parse(text) : null };
  };
  return { token, call, get: (path) => call("GET", path) };
}

/** Signs a fresh user in through the page; returns its id. */
export async function newUser(page) {
  await page.goto("/");
  await expect(page.locator("body")).toHaveAttribute("data-ready", "true");
  await page.getByRole("button", { name: "New user" }).click();
  await expect(page.locator("#token-info")).toContainText("Signed in as");
  const userId = await page.locator("body").getAttribute("data-user");
  expect(userId).toMatch(/^[0-9a-f-]{36}$/);
  return userId;
}

/** Fails the test on any uncaught error in the page. */
export function watchPageErrors(page) {
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  return () => expect(errors, "uncaught errors in the page").toEqual([]);
}
