"""Structured logs: key=value (logfmt) or JSON lines, a level per module, changeable at runtime.

``configure`` installs the handlers once at start; ``apply_levels`` sets the root level and the
per-module overrides of the ``[log]`` section and can be called again at any time (``qenex-node
start`` does so on SIGHUP after re-reading config.toml), so an operator turns on
``qenex.p2p=DEBUG`` on a running validator and back off without a restart.

JSON lines come from ``python-json-logger`` (fields ``ts``, ``level``, ``logger``, ``msg``);
key=value lines quote the message, so every line parses as logfmt. Both formats give the fields a
call passes as ``extra`` keys of their own (``log.info("committed block %d", h, extra={"height": h})``
gives ``"height": 5`` in JSON and ``height=5`` in key=value), so a log pipeline reads values without
parsing the message; ``extra_fields`` says which.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from node.config import LogSection
from node.exceptions import ConfigError

FORMATS = ("kv", "json")
"""Accepted values of ``[log] format``."""

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Accepted level names (case-insensitive)."""


FIXED_KEYS = ("ts", "level", "logger", "msg", "exc")
"""Keys every line has (``exc`` only with an exception); an ``extra`` field of one of these names is
written as ``extra_<name>`` instead, so that it never hides them."""

_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                      "taskName"}
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record`` (attributes a plain ``LogRecord`` does not have), in the order
    given, each name made a logfmt key (characters other than letters, digits, ``_.-`` become ``_``)
    and renamed ``extra_<name>`` if it is one of ``FIXED_KEYS``."""
    out: dict[str, Any] = {}
    for name, value in record.__dict__.items():
        if name in _RECORD_ATTRS:
            continue
        key = _BAD_KEY_CHARS.sub("_", name) or "_"
        out[f"extra_{key}" if key in FIXED_KEYS else key] = value
    return out


def format_time(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601, UTC, to the millisecond: ``2025-01-31T12:00:00.123Z`` (one word,
    so that logfmt lines split on spaces)."""
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _logfmt_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _logfmt_value(value: Any) -> str:
    """A logfmt value: numbers and booleans bare, bytes as 0x-hex, text bare when it is one plain word."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = "0x" + value.hex() if isinstance(value, bytes | bytearray) else str(value)
    if text and not re.search(r'[\s="\\]', text):
        return text
    return _logfmt_quote(text)


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value...``: one logfmt line per record, the message
    quoted, then the record's ``extra`` fields (``extra_fields``)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a logfmt line (exception text, if any, quoted in ``exc`` at the end)."""
        msg = _logfmt_quote(record.getMessage())
        line = f"ts={format_time(record)} level={record.levelname} logger={record.name} msg={msg}"
        for key, value in extra_fields(record).items():
            line += f" {key}={_logfmt_value(value)}"
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace('"', '\\"').replace("\n", "\\n")
            line += f' exc="{exc}"'
        return line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, then the record's ``extra``
    fields (``extra_fields``: a colliding name never replaces a fixed key), values kept as their JSON
    types (an int height stays a number)."""

    def __init__(self) -> None:
        """The fixed fields renamed from the ``logging`` attribute names."""
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"})

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        """The fixed fields from a copy of ``record`` without its extras, then ``extra_fields(record)``."""
        plain = logging.makeLogRecord({k: v for k, v in record.__dict__.items() if k in _RECORD_ATTRS})
        super().add_fields(log_data, plain, message_dict)
        log_data.update(extra_fields(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """``ts`` as in key=value lines (``format_time``)."""
        return format_time(record)


def _level(name: str) -> int:
    if name.upper() not in LEVELS:
        raise ConfigError(f"unknown log level {name!r} (want one of {', '.join(LEVELS)})")
    return int(getattr(logging, name.upper()))


def parse_modules(modules: tuple[str, ...]) -> dict[str, int]:
    """``("qenex.p2p=DEBUG", ...)`` -> ``{"qenex.p2p": logging.DEBUG}``. Raises ``ConfigError``."""
    out: dict[str, int] = {}
    for item in modules:
        name, sep, level = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad [log] modules entry {item!r} (want logger=LEVEL, e.g. qenex.p2p=DEBUG)")
        out[name.strip()] = _level(level.strip())
    return out


_overridden: set[str] = set()


def apply_levels(section: LogSection) -> None:
    """Set the root level and the per-module levels of ``section``; modules dropped since the last call
    go back to inheriting the root level. Raises ``ConfigError`` (and changes nothing) on bad values."""
    root = _level(section.level)
    modules = parse_modules(section.modules)
    logging.getLogger().setLevel(root)
    for name in _overridden - set(modules):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in modules.items():
        logging.getLogger(name).setLevel(level)
    _overridden.clear()
    _overridden.update(modules)


def set_module_level(module: str, level: str) -> str:
    """Set the level of logger ``module`` (``""`` or ``"root"``: the root logger) at runtime, as a
    ``[log] modules`` entry would; returns the level it had (``NOTSET``: it inherited). The next SIGHUP
    reload (``apply_levels``) puts the configured levels back. Raises ``ConfigError`` (changing
    nothing) for an unknown level or a malformed name."""
    name = module.strip()
    if name in ("", "root"):
        logger = logging.getLogger()
        previous = logger.level
        logger.setLevel(_level(level))
        return logging.getLevelName(previous)
    parsed = parse_modules((f"{name}={level}",))
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(parsed[name])
    _overridden.add(name)
    return logging.getLevelName(previous)


def configure(section: LogSection, logfile: Path | None = None) -> None:
    """Send logs to stderr (and ``logfile``) in ``section.format``, at ``section``'s levels.

    Raises ``ConfigError`` for an unknown format or level.
    """
    if section.format not in FORMATS:
        raise ConfigError(f"unknown log format {section.format!r} (want one of {', '.join(FORMATS)})")
    formatter: logging.Formatter
    if section.format == "json":
        formatter = JsonLineFormatter()
    else:
        formatter = LogfmtFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile is not None:
        handlers.append(logging.FileHandler(logfile))
    for h in handlers:
        h.setFormatter(formatter)
    apply_levels(section)  # validates before the handlers change
    logging.basicConfig(handlers=handlers, force=True, level=_level(section.level))
