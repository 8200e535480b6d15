// schema.d.ts must be what openapi-typescript makes of docs/openapi.yaml now: a
// route or schema changed without `make client` fails here (and so `make e2e`).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL("..", import.meta.url));
const documentPath = join(here, "../../docs/openapi.yaml");

test("schema.d.ts is up to date with docs/openapi.yaml", () => {
  const dir = mkdtempSync(join(tmpdir(), "picture-schema-"));
  try {
    const fresh = join(dir, "schema.d.ts");
    execFileSync(join(here, "node_modules/.bin/openapi-typescript"), [documentPath, "-o", fresh], { stdio: "pipe" });
    const want = readFileSync(fresh, "utf8").split("\n");
    const have = readFileSync(join(here, "schema.d.ts"), "utf8").split("\n");
    const at = want.findIndex((line, i) => line !== have[i]);
    const first = at < 0 ? have.length === want.length ? -1 : Math.min(have.length, want.length) : at;
    assert.equal(
      first,
      -1,
      `clients/typescript/schema.d.ts is out of date with docs/openapi.yaml: run \`make client\`.\n` +
        `First difference at line ${first + 1}:\n  generated now: ${want[first] ?? "(end)"}\n  committed:     ${have[first] ?? "(end)"}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the generated types cover every operation of the document", async () => {
  const schema = readFileSync(join(here, "schema.d.ts"), "utf8");
  const ids = [...readFileSync(documentPath, "utf8").matchAll(/^\s+operationId:\s*(\w+)/gm)].map((m) => m[1]);
  assert.ok(ids.length > 10, "operations found in the document");
  for (const id of ids) assert.match(schema, new RegExp(`^    ${id}: \\{`, "m"), `operation ${id} in schema.d.ts`);
});
