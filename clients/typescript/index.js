// The Picture API client: openapi-fetch over the types that openapi-typescript
// generates from docs/openapi.yaml (schema.d.ts; `npm run generate`, or `make client`).
import createClient from "openapi-fetch";

/**
 * A client of the Picture API whose every path, parameter, body and answer is typed
 * from the document. `token` (a string, or a function giving one, e.g. from the auth
 * service's session) is sent as `Authorization: Bearer …`; other options are
 * openapi-fetch's (`baseUrl`, `fetch`, `headers`, …).
 */
export function createPictureClient({ token, ...options } = {}) {
  const client = createClient({ baseUrl: "http://127.0.0.1:3006", ...options });
  if (token) {
    client.use({
      async onRequest({ request }) {
        const value = typeof token === "function" ? await token() : token;
        if (value && !request.headers.has("authorization")) request.headers.set("authorization", `Bearer ${value}`);
        return request;
      },
    });
  }
  return client;
}
