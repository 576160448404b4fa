"""Structured logs: logfmt and JSON lines, per-module levels, SIGHUP re-reads them in a running node."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devnet.layout import generate
from devnet.processes import start_node, stop_node
from node.config import LogSection, load_config
from node.exceptions import ConfigError
from node.logs import LogfmtFormatter, apply_levels, configure, parse_modules
from tests.conftest import STARTING, poll_until
from tests.test_devnet import free_block


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    apply_levels(LogSection(level=logging.getLevelName(level) if level else "WARNING"))
    root.handlers[:] = handlers
    root.setLevel(level)


def record(msg: str, *args: object, name: str = "qenex.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_logfmt_line_quotes_the_message() -> None:
    line = LogfmtFormatter().format(record('peer %s said "hi"\nbye', "0xab"))
    assert line.startswith("ts=") and ' level=WARNING logger=qenex.test msg="' in line
    assert line.endswith('msg="peer 0xab said \\"hi\\"\\nbye"')
    assert "\n" not in line


def test_json_lines_parse(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSection(level="INFO", format="json"))
    logging.getLogger("qenex.node").info("committed block %d", 7)
    logging.getLogger("qenex.node").debug("not shown")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "qenex.node"
    assert lines[0]["msg"] == "committed block 7" and "ts" in lines[0]


def test_module_levels_apply_and_revert(restore_logging: None) -> None:
    configure(LogSection(level="WARNING", modules=("qenex.p2p=DEBUG",)))
    assert logging.getLogger("qenex.p2p.network").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("qenex.node").isEnabledFor(logging.INFO)
    apply_levels(LogSection(level="INFO", modules=("qenex.rpc=ERROR",)))
    assert not logging.getLogger("qenex.p2p").isEnabledFor(logging.DEBUG)  # override dropped
    assert logging.getLogger("qenex.node").isEnabledFor(logging.INFO)
    assert not logging.getLogger("qenex.rpc").isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("section", [
    LogSection(level="LOUD"), LogSection(format="xml"), LogSection(modules=("qenex.p2p",)),
    LogSection(modules=("qenex.p2p=CHATTY",)),
])
def test_bad_log_settings_are_errors_and_change_nothing(restore_logging: None, section: LogSection) -> None:
    configure(LogSection(level="INFO"))
    before = logging.getLogger().level
    with pytest.raises(ConfigError):
        configure(section)
    assert logging.getLogger().level == before


def test_config_file_log_section_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[log]\nlevel = "INFO"\nformat = "json"\nmodules = ["qenex.p2p=DEBUG"]\n')
    assert load_config(path).log == LogSection("INFO", "json", ("qenex.p2p=DEBUG",))
    path.write_text('[log]\nmodules = ["qenex.p2p:DEBUG"]\n')
    with pytest.raises(ConfigError, match="logger=LEVEL"):
        load_config(path)
    assert parse_modules(("a=debug", "b.c=ERROR")) == {"a": logging.DEBUG, "b.c": logging.ERROR}


@pytest.mark.slow
async def test_sighup_changes_levels_of_a_running_node(tmp_path: Path) -> None:
    base = free_block(2)
    layout = generate(tmp_path / "net", validators=1, base_rpc_port=base, base_p2p_port=base + 1, scrypt_n=2**10)
    node = layout.nodes[0]
    config = Path(node.home) / "config.toml"
    config.write_text(config.read_text().replace('level = "INFO"', 'level = "WARNING"'))
    log = Path(node.home) / "node.log"
    running = await start_node(node)
    try:
        async with httpx.AsyncClient() as http:
            async def healthy() -> bool:
                return (await http.get(node.rpc_url.rstrip("/") + "/health")).status_code == 200

            await poll_until(healthy, what="the node is up (signal handlers installed)", timeout=30,
                             tolerate=STARTING)

        def logged(text: str) -> Callable[[], bool]:
            return lambda: text in log.read_text()

        running.process.send_signal(signal.SIGHUP)
        # the one validator commits empty blocks, logged at INFO only
        await poll_until(logged("SIGHUP"), what="the node logs the reload", timeout=30)
        assert "committed block" not in log.read_text()
        config.write_text(config.read_text().replace('level = "WARNING"', 'level = "INFO"'))
        running.process.send_signal(signal.SIGHUP)
        await poll_until(logged("committed block"), what="INFO lines appear", timeout=30)
        config.write_text(config.read_text().replace('format = "kv"', 'format = "yaml"'))
        running.process.send_signal(signal.SIGHUP)
        await poll_until(logged("log levels unchanged"), what="the bad file is reported", timeout=30)
        assert running.process.poll() is None  # a bad file is reported, the node runs on
    finally:
        await stop_node(running)
