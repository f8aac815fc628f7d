"""Structured logging: JSON lines when the output is not a terminal (CI, containers,
log shippers), readable key=value lines on a terminal. Library loggers (alembic, mlflow,
prefect) go through the same renderer so one stream carries everything."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Set up structlog and the standard library's root logger once per process."""
    global _configured
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _exceptions_for(level),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Chatty at INFO without telling an operator anything.
    for noisy in (
        "alembic.runtime.plugins",
        "alembic.runtime.migration",
        "httpx",
        "great_expectations._docs_decorators",  # ~150 lines per import of the gate
        "great_expectations.expectations.registry",  # "multiple declarations of metric"
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it). Its name has no
    leading underscore: Prefect keeps a root handler it recognises as the user's."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _exceptions_for(level: str) -> Any:
    """Tracebacks only at DEBUG; otherwise a one-line `error` field (no stack to users)."""

    def process(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        exc_info = event.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if level == "DEBUG":
                event["exc_info"] = exc_info
                return dict(structlog.processors.format_exc_info(_logger, _name, event))
            if exc_info[0] is not None:
                event["error"] = f"{exc_info[0].__name__}: {exc_info[1]}"
        return event

    return process


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; configures logging with defaults if nobody has yet."""
    if not _configured:
        configure_logging()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
