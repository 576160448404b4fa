"""Structured logs: key=value (logfmt) or JSON lines, a level per module, changeable at runtime.

``configure`` installs the handlers once at start; ``apply_levels`` sets the root level and the
per-module overrides of the ``[log]`` section and can be called again at any time (``qenex-node
start`` does so on SIGHUP after re-reading config.toml), so an operator turns on
``qenex.p2p=DEBUG`` on a running validator and back off without a restart.

JSON lines come from ``python-json-logger`` (fields ``ts``, ``level``, ``logger``, ``msg``);
key=value lines quote the message, so every line parses as logfmt.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from node.config import LogSection
from node.exceptions import ConfigError

FORMATS = ("kv", "json")
"""Accepted values of ``[log] format``."""

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Accepted level names (case-insensitive)."""


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..."``: one logfmt line per record, message quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a logfmt line (exception text, if any, quoted in ``exc``)."""
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = f'ts={self.formatTime(record)} level={record.levelname} logger={record.name} msg="{msg}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace('"', '\\"').replace("\n", "\\n")
            line += f' exc="{exc}"'
        return line


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
        formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                  rename_fields={"asctime": "ts", "levelname": "level", "name": "logger",
                                                 "message": "msg"})
    else:
        formatter = LogfmtFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile is not None:
        handlers.append(logging.FileHandler(logfile))
    for h in handlers:
        h.setFormatter(formatter)
    apply_levels(section)  # validates before the handlers change
    logging.basicConfig(handlers=handlers, force=True, level=_level(section.level))
