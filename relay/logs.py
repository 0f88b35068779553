"""structlog setup: JSON lines by default, with event id, callback id and attempt as fields."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(_LEVELS[level], 30), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka.consumer.group_coordinator").addFilter(_retriable_coordinator_lookup)


def _retriable_coordinator_lookup(record: logging.LogRecord) -> bool:
    """aiokafka logs an ERROR for every retried coordinator lookup; on a fresh broker the first ones
    always fail while ``__consumer_offsets`` is created, which alarms newcomers for nothing. They are
    lowered to INFO (so hidden at the default level); a lookup that keeps failing shows as a stalled
    ingest (``/readyz``, ``ingest.stalled`` on ``relay.ops``)."""
    if record.levelno == logging.ERROR and record.getMessage().startswith("Group Coordinator Request failed") \
            and "NotAvailable" in record.getMessage():
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)
    return True
