"""Reading and continuing a W3C traceparent."""

from __future__ import annotations

from relay import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_header_is_read_and_invalid_ones_are_ignored() -> None:
    assert tracing.from_headers([("other", b"x"), ("TraceParent", PARENT.upper().encode())]) == PARENT
    for bad in (b"", b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01", b"\xff\xfe", b"00-xyz"):
        assert tracing.from_headers([("traceparent", bad)]) is None, bad
    assert tracing.from_headers(None) is None


def test_a_child_keeps_the_trace_and_the_flags_with_a_new_span() -> None:
    child = tracing.child(PARENT)
    assert tracing.valid(child) and child[:36] == PARENT[:36] and child[-3:] == "-01"
    assert child[36:52] != PARENT[36:52]
    assert tracing.trace_id(PARENT) == "4bf92f3577b34da6a3ce929d0e0e4736" and tracing.trace_id(None) is None


def test_spans_are_exported_only_when_the_standard_variables_ask() -> None:
    from relay.telemetry import Telemetry, export_wanted

    assert not export_wanted({})
    assert export_wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert export_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not export_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    off = Telemetry.from_environment({})
    assert not off.enabled
    assert off.ingested(PARENT, "e", "a", "t", "topic", 0, 1) == PARENT, "off, the producer's context passes on"
    assert off.delivering(PARENT, "cb", ["e"], 1, "msg") is None
