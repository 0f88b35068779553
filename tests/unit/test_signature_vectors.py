"""The committed signature vectors: our signer reproduces them, our verifier and an independent
Standard Webhooks library agree with them, and every documented snippet (Python, Node.js, Go,
Java, shell) gets each one right."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

import relay.verify as rv
from relay.events import SCHEMA_DIR
from tests.helpers.vectors import render

VECTORS_PATH = SCHEMA_DIR / "signature-vectors.json"
VECTORS = orjson.loads(VECTORS_PATH.read_bytes())
SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets"


def body_of(case: dict[str, Any]) -> bytes:
    return base64.b64decode(case["bodyBase64"])


def test_committed_vectors_match_the_signer() -> None:
    assert VECTORS_PATH.read_bytes() == render(), "regenerate: python -m tests.helpers.vectors"


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors_verify(case: dict[str, Any]) -> None:
    assert rv.verify(case["keys"], case["headers"], body_of(case), now=VECTORS["now"]) == case["headers"]["webhook-id"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_fail_with_the_named_error(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(rv, case["error"])):
        rv.verify(case["keys"], case["headers"], body_of(case), now=VECTORS["now"])


@pytest.mark.parametrize("case", VECTORS["ens"], ids=lambda c: c["name"])
def test_ens_vectors(case: dict[str, Any]) -> None:
    if case["valid"]:
        rv.verify_ens(case["key"], case["x-sfmc-ens-signature"], body_of(case))
    else:
        with pytest.raises(rv.NoMatchingSignature):
            rv.verify_ens(case["key"], case["x-sfmc-ens-signature"], body_of(case))


@pytest.mark.parametrize("case", [c for c in VECTORS["valid"] if c["keys"][0].startswith("whsec_")],
                         ids=lambda c: c["name"])
def test_an_independent_standard_webhooks_library_computes_the_same_v1_signature(case: dict[str, Any]) -> None:
    headers = case["headers"]
    when = dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=dt.UTC)
    theirs = Webhook(case["keys"][0]).sign(headers["webhook-id"], when, body_of(case).decode())
    assert theirs in headers["webhook-signature"].split()


def _runners(tmp: Path) -> dict[str, tuple[list[str], set[str]]]:
    """language → (command prefix, key kinds it supports)."""
    runners: dict[str, tuple[list[str], set[str]]] = {
        "python": ([sys.executable, str(SNIPPETS / "verify.py")], {"whsec_"}),
        "shell": (["bash", str(SNIPPETS / "verify.sh")], {"whsec_"}),
    }
    if shutil.which("node"):
        runners["node"] = (["node", str(SNIPPETS / "verify.js")], {"whsec_", "whpk_"})
    if shutil.which("go"):
        binary = tmp / "verify-go"
        subprocess.run(["go", "build", "-o", str(binary), str(SNIPPETS / "verify.go")], check=True,
                       cwd=tmp, timeout=300)
        runners["go"] = ([str(binary)], {"whsec_", "whpk_"})
    if shutil.which("java"):
        subprocess.run(["javac", "-d", str(tmp), str(SNIPPETS / "Verify.java")], check=True, timeout=120)
        runners["java"] = (["java", "-cp", str(tmp), "Verify"], {"whsec_"})
    return runners


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], set[str]]]:
    return _runners(tmp_path_factory.mktemp("snippets"))


@pytest.mark.parametrize("language", ["python", "shell", "node", "go", "java"])
def test_documented_snippets_get_every_vector_right(language: str, runners, tmp_path: Path) -> None:
    assert language in runners, f"{language} toolchain missing on this machine"
    command, kinds = runners[language]
    checked = 0
    for expect_ok, case in [(True, c) for c in VECTORS["valid"]] + [(False, c) for c in VECTORS["invalid"]]:
        key = case["keys"][0]
        headers = case["headers"]
        if key[:6] not in kinds and key[:5] not in kinds:
            continue
        if not {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers.keys():
            continue  # a missing header is the caller's concern before any snippet runs
        body = tmp_path / "body"
        body.write_bytes(body_of(case))
        result = subprocess.run(
            [*command, key, headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"],
             str(body), str(VECTORS["now"])], capture_output=True, timeout=60)
        assert (result.returncode == 0) is expect_ok, (language, case["name"], result.stderr.decode())
        checked += 1
    assert checked >= 20
