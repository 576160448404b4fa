"""Structured logs: logfmt and JSON lines, per-module levels, SIGHUP re-reads them in a running node."""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from devnet.layout import generate
from devnet.processes import start_node, stop_node
from node.config import ConsensusSection, LogSection, load_config
from node.exceptions import ConfigError
from node.logs import JsonLineFormatter, LogfmtFormatter, apply_levels, configure, parse_modules
from tests.conftest import STARTING, poll_until, start_solo_node
from tests.test_devnet import free_block


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


_LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s"=]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """key=value pairs of a logfmt line (quoted values unquoted); fails unless the whole line is pairs."""
    out, pos = {}, 0
    while pos < len(line):
        m = _LOGFMT_PAIR.match(line, pos)
        assert m is not None, f"not logfmt at {line[pos:]!r}"
        key, value = m[1], m[2]
        assert key not in out, f"duplicate key {key}"
        out[key] = json.loads(value) if value.startswith('"') else value
        pos = m.end()
    return out


def test_extra_fields_are_keys_of_their_own() -> None:
    rec = record("peer %s", "0xab")
    rec.__dict__.update(peer=b"\xab", height=5, note='two "words"', level="shadow", ok=True)
    fields = parse_logfmt(LogfmtFormatter().format(rec))
    assert fields["msg"] == "peer 0xab" and fields["level"] == "WARNING"  # an extra never hides a fixed key
    assert fields["height"] == "5" and fields["peer"] == "0xab" and fields["ok"] == "true"
    assert fields["note"] == 'two "words"' and fields["extra_level"] == "shadow"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])
    doc = json.loads(JsonLineFormatter().format(rec))
    assert doc["level"] == "WARNING" and doc["extra_level"] == "shadow" and doc["height"] == 5
    assert doc["ts"] == fields["ts"] and doc["logger"] == "qenex.test"


@pytest.mark.parametrize("fmt", ["json", "kv"])
async def test_commit_line_carries_height_hash_txs_and_view(restore_logging: None, fmt: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSection(level="INFO", format=fmt))
    capsys.readouterr()
    async with trio.open_nursery() as nursery:
        node = await start_solo_node(nursery, consensus=ConsensusSection(block_interval_ms=10,
                                                                         empty_block_interval_ms=10))
        while node.chain.head.height < 2:
            await node.commit_event.wait()  # the commit is logged before its waiters run
        nursery.cancel_scope.cancel()
    lines = capsys.readouterr().err.splitlines()
    fields = [json.loads(x) if fmt == "json" else parse_logfmt(x) for x in lines]
    commits = [f for f in fields if f["msg"].startswith("committed block ")]
    assert len(commits) >= 2
    for f in commits:
        height = int(f["msg"].split()[2])
        if fmt == "json":
            assert f["height"] == height and isinstance(f["height"], int)
            assert f["txs"] == 0 and isinstance(f["view"], int)
        else:
            assert f["height"] == str(height) and f["txs"] == "0" and f["view"].isdigit()
        block = node.chain.block(height)
        assert block is not None and f["hash"] == "0x" + block.hash.hex()


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
