// Verify a Relay delivery in Node.js (no dependencies): Standard Webhooks v1 (HMAC-SHA256) with a
// whsec_ secret, or v1a (Ed25519) with a whpk_ public key.
// usage: node verify.js KEY WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
const crypto = require("crypto");
const fs = require("fs");

function verify(key, msgId, timestamp, signatureHeader, body, now = Date.now() / 1000, tolerance = 300) {
  if (!/^[0-9]+$/.test(timestamp) || Math.abs(now - Number(timestamp)) > tolerance) return false;
  const signed = Buffer.concat([Buffer.from(`${msgId}.${timestamp}.`), body]);
  for (const entry of signatureHeader.split(" ").filter(Boolean)) {
    const [version, signature] = entry.split(",", 2);
    if (signature === undefined) return false;
    const given = Buffer.from(signature, "base64");
    if (version === "v1" && key.startsWith("whsec_")) {
      const secret = Buffer.from(key.slice("whsec_".length), "base64");
      const expected = crypto.createHmac("sha256", secret).update(signed).digest();
      if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) return true;
    }
    if (version === "v1a" && key.startsWith("whpk_")) {
      const x = Buffer.from(key.slice("whpk_".length), "base64").toString("base64url");
      const publicKey = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
      if (crypto.verify(null, signed, publicKey, given)) return true;
    }
  }
  return false;
}

const [key, msgId, ts, sig, bodyFile, now] = process.argv.slice(2);
const ok = verify(key, msgId, ts, sig, fs.readFileSync(bodyFile), now ? Number(now) : undefined);
console.error(ok ? "valid" : "invalid");
process.exit(ok ? 0 : 1);
