"""Audit: export the on-chain trail, anchor it to the chain, replay every round bit for bit, report.

Anyone with read access re-derives every aggregate and contribution score
from the committed updates under the approved plan and gets the same bytes;
the auditor key (a recipient the plan names) decrypts the updates. Each round
is VERIFIED, DISCREPANCY or UNVERIFIABLE (``replay``); an exported trail is
ANCHORED, UNANCHORED or DISCREPANCY (``anchor``).

It lives beside the coordinator because it re-runs the coordinator's
computation (the same strategy files and the same collect-verify step,
``coordinator.collect``), never the other way round: nothing in
``coordinator.runner`` imports the audit.
"""

from fedchain.coordinator.audit.trail import TRAIL_FORMAT, Trail, export_trail, read_trail

__all__ = ["TRAIL_FORMAT", "Trail", "export_trail", "read_trail"]
