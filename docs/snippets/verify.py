"""Verify a Relay delivery (Standard Webhooks v1, HMAC-SHA256). Python 3, standard library only.

usage: python verify.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
"""
import base64, hashlib, hmac, sys, time


def verify(secret: str, msg_id: str, timestamp: str, signature_header: str, body: bytes,
           now: float | None = None, tolerance: int = 300) -> bool:
    if not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:           # replay protection, part 1
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signature_header.split():              # several entries during a rotation
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True                                 # part 2: remember msg_id, drop repeats
    return False


if __name__ == "__main__":
    secret, msg_id, ts, sig, body_file = sys.argv[1:6]
    now = float(sys.argv[6]) if len(sys.argv) > 6 else None
    ok = verify(secret, msg_id, ts, sig, open(body_file, "rb").read(), now)
    print("valid" if ok else "invalid", file=sys.stderr)
    sys.exit(0 if ok else 1)
