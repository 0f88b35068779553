import subprocess
import sys

from tests.helpers.vectors import MSG_ID, NOW, SECRET


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "relay.cli", "verify", *args], input=stdin,
                          capture_output=True, timeout=60)


def test_sign_then_verify_and_a_clear_reason_on_failure(tmp_path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'[{"eventId":"evt_1"}]')
    signed = run("--sign", "--secret", SECRET, "--id", MSG_ID, "--timestamp", str(NOW), "--body", str(body))
    assert signed.returncode == 0
    headers = tmp_path / "headers.txt"
    headers.write_bytes(signed.stdout)
    assert b"webhook-signature: v1," in signed.stdout
    ok = run("--secret", SECRET, "--headers", str(headers), "--body", str(body), "--tolerance", "999999999")
    assert ok.returncode == 0 and MSG_ID.encode() in ok.stdout
    stale = run("--secret", SECRET, "--headers", str(headers), "--body", str(body))
    assert stale.returncode == 1 and b"TimestampTooOld" in stale.stderr
    body.write_bytes(b'[{"eventId":"evt_2"}]')
    tampered = run("--secret", SECRET, "--headers", str(headers), "--body", str(body), "--tolerance", "999999999")
    assert tampered.returncode == 1 and b"NoMatchingSignature" in tampered.stderr
