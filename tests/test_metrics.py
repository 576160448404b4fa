"""GET /metrics of a fresh node: every metric the operator needs is there before its first event."""

from __future__ import annotations

from node.metrics import EVIDENCE_KINDS, MESSAGE_TYPES, REJECT_REASONS
from tests.conftest import LiveNode
from tests.test_rpc import metric_values

# The list (issue 7, "Operating a node"), each as the series that must be exposed.
REQUIRED = {
    "height": ["qenex_height"],
    "view": ["qenex_view"],
    "view changes": ["qenex_view_changes_total"],
    "commit latency histogram": ['qenex_commit_latency_seconds_bucket{le="+Inf"}',
                                 "qenex_commit_latency_seconds_count", "qenex_commit_latency_seconds_sum"],
    "block size": ['qenex_block_size_bytes_bucket{le="+Inf"}', "qenex_block_size_bytes_count"],
    "transactions per block": ['qenex_block_transactions_bucket{le="+Inf"}', "qenex_block_transactions_count"],
    "mempool size and bytes": ["qenex_mempool_transactions", "qenex_mempool_bytes"],
    "peers connected": ["qenex_peers_connected"],
    "messages in/out per type": [f'qenex_p2p_messages_{way}_total{{type="{t}"}}'
                                 for way in ("received", "sent") for t in MESSAGE_TYPES.values()],
    "bytes in/out": ["qenex_p2p_received_bytes_total", "qenex_p2p_sent_bytes_total",
                     "qenex_p2p_wire_received_bytes_total", "qenex_p2p_wire_sent_bytes_total"],
    "rejected transactions by reason": [f'qenex_transactions_rejected_total{{reason="{r}"}}'
                                        for r in REJECT_REASONS],
    "equivocation evidence": ["qenex_equivocation_evidence"] + [
        f'qenex_equivocations_detected_total{{kind="{k}"}}' for k in EVIDENCE_KINDS],
    "process CPU and memory": ["process_cpu_seconds_total", "process_resident_memory_bytes"],
    "sends refused per lane": ['qenex_p2p_sends_refused_total{lane="urgent"}',
                               'qenex_p2p_sends_refused_total{lane="bulk"}'],
}


async def test_a_fresh_node_exposes_every_required_metric(live_node: LiveNode) -> None:
    metrics = await metric_values(live_node)
    missing = {what: [s for s in series if s not in metrics] for what, series in REQUIRED.items()}
    assert {what: s for what, s in missing.items() if s} == {}
    # labelled counters read 0 before their first event (nothing was rejected or detected yet)
    assert metrics['qenex_transactions_rejected_total{reason="nonce too low"}'] == 0.0
    assert metrics['qenex_equivocations_detected_total{kind="prepare"}'] == 0.0
    assert metrics['qenex_mempool_dropped_total{reason="evicted"}'] == 0.0
    assert metrics["process_resident_memory_bytes"] > 0
