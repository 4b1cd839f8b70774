// Runs the browser client of PROTOCOL.md (section 10.2, the code as printed there) against
// shared/protocol/test-vectors.json, in Node's WebCrypto: the commands it signs, the
// responses and the key set it verifies, byte for byte as the Rust side pins them.
//
//   node tests/js-client/vectors.mjs        (from the repository's root; infra/js-client)
//
// Exits non-zero, naming the check, when the client and the vectors disagree.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { webcrypto } from "node:crypto";

// Node 18 has WebCrypto, but not yet as the browser's global.
globalThis.crypto ??= webcrypto;

// The client: the first `js` block after the heading of section 10.2.
const protocol = readFileSync("shared/protocol/PROTOCOL.md", "utf8");
const section = protocol.indexOf("### 10.2 ");
assert.ok(section >= 0, "PROTOCOL.md has a section 10.2");
const open = protocol.indexOf("```js\n", section);
const close = protocol.indexOf("\n```", open + 6);
assert.ok(open > 0 && close > open, "section 10.2 holds a js block");
const client = protocol.slice(open + 6, close);
const names = ["canonical", "signCommand", "verifyResponse", "wellFormed", "selfSigned", "follow"];
const dir = mkdtempSync(join(tmpdir(), "edge-auth-js-"));
const file = join(dir, "client.mjs");
writeFileSync(file, `${client}\nexport { ${names.join(", ")} };\n`);
const js = await import(pathToFileURL(file).href);
rmSync(dir, { recursive: true });

const vectors = JSON.parse(readFileSync("shared/protocol/test-vectors.json", "utf8"));
const hexOf = (bytes) => Buffer.from(bytes).toString("hex");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const fromB64 = (text) => new Uint8Array(Buffer.from(text, "base64"));

// The device's key pair from its seed (the vectors' RFC 8032 private key).
const seed = Buffer.from(vectors.device_seed_hex, "hex");
const x = b64url(Buffer.from(vectors.device_public_key, "base64"));
const jwk = { kty: "OKP", crv: "Ed25519", x };
const keys = {
  privateKey: await crypto.subtle.importKey("jwk", { ...jwk, d: b64url(seed) }, { name: "Ed25519" }, false, ["sign"]),
  publicKey: await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, true, ["verify"]),
};

let checks = 0;
const check = async (what, run) => {
  try {
    await run();
    checks += 1;
  } catch (e) {
    console.error(`js client: ${what}: ${e.message}`);
    process.exit(1);
  }
};

for (const [i, c] of vectors.cases.entries()) {
  const e = c.command.envelope;
  const name = `case ${i + 1} (${e.message_type})`;
  let sent;
  await check(`${name}: signs the command the vectors pin`, async () => {
    sent = await js.signCommand(keys, e.device_session_id, e.message_type, fromB64(c.command.payload),
      e.timestamp_ms, e.request_id);
    assert.deepEqual(sent.command, c.command);
    assert.equal(sent.requestSha256, c.request_sha256);
  });
  await check(`${name}: the response's canonical bytes`, async () => {
    const r = c.response.envelope;
    const bytes = js.canonical("edge-auth/response/v1", [r.protocol_version, r.request_id,
      r.device_session_id, r.timestamp_ms, r.status, r.result_code, r.backend_status,
      r.payload_sha256, r.request_sha256, r.key_id]);
    assert.equal(hexOf(bytes), c.response_canonical_hex);
  });
  await check(`${name}: verifies the response`, async () => {
    const payload = await js.verifyResponse(c.response, vectors.gateway_jwks, sent);
    assert.deepEqual(new Uint8Array(payload), fromB64(c.response.payload));
  });
  await check(`${name}: refuses the response for another request, or altered`, async () => {
    const other = { ...sent, requestSha256: "0".repeat(64) };
    await assert.rejects(js.verifyResponse(c.response, vectors.gateway_jwks, other), /another request/);
    const altered = structuredClone(c.response);
    altered.envelope.result_code = "forged";
    await assert.rejects(js.verifyResponse(altered, vectors.gateway_jwks, sent), /bad signature/);
    const swapped = structuredClone(c.response);
    swapped.payload = Buffer.from("forged").toString("base64");
    await assert.rejects(js.verifyResponse(swapped, vectors.gateway_jwks, sent), /payload hash/);
  });
}

await check("the key set's canonical bytes", async () => {
  const set = vectors.gateway_jwks;
  const bytes = js.canonical("edge-auth/key-set/v1", [set.keys.length,
    ...set.keys.flatMap((k) => [k.kid, k.kty, k.crv, k.x, k.use, k.alg])]);
  assert.equal(hexOf(bytes), vectors.gateway_jwks_canonical_hex);
});
await check("the key set is well formed and signed by its key", async () => {
  assert.equal(js.wellFormed(vectors.gateway_jwks), true);
  assert.equal(await js.selfSigned(vectors.gateway_jwks), true);
  const forged = structuredClone(vectors.gateway_jwks);
  forged.keys[0].x = x; // the device's key in its place: the signature no longer verifies
  assert.equal(await js.selfSigned(forged), false);
  const unsigned = { ...vectors.gateway_jwks, signatures: [] };
  assert.equal(await js.selfSigned(unsigned), false);
});
await check("a pinned set follows itself and refuses a kid rebound to another key", async () => {
  const pin = { jwks: vectors.gateway_jwks };
  assert.deepEqual(await js.follow(pin, vectors.gateway_jwks), pin);
  const rebound = structuredClone(vectors.gateway_jwks);
  rebound.keys[0].x = x;
  assert.equal(await js.follow(pin, rebound), null);
});

console.log(`js client: ${checks} checks against shared/protocol/test-vectors.json passed (node ${process.version})`);
