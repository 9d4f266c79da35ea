"""Membership motions: admit a member, remove one, move the coordinator — by vote."""

from __future__ import annotations

from fedchain.contracts.models import MotionKind, TxResult
from fedchain.usecases.ports import Governance


def propose_admit(gov: Governance, name: str, address: str, x25519_pub: bytes) -> TxResult:
    """Motion to admit ``address`` as member ``name`` with its X25519 key; ``value`` is the motion id."""
    return gov.consortium.propose_motion(MotionKind.ADMIT, address, name, x25519_pub)


def propose_remove(gov: Governance, address: str) -> TxResult:
    """Motion to remove a member; ``value`` is the motion id."""
    return gov.consortium.propose_motion(MotionKind.REMOVE, address)


def propose_coordinator(gov: Governance, address: str) -> TxResult:
    """Motion to make ``address`` the coordinator; ``value`` is the motion id."""
    return gov.consortium.propose_motion(MotionKind.SET_COORDINATOR, address)


def vote(gov: Governance, motion_id: int, support: bool) -> TxResult:
    """Vote yes (True) or no (False) on a motion."""
    return gov.consortium.vote_motion(motion_id, support)


def finalize(gov: Governance, motion_id: int) -> TxResult:
    """Finalize (and apply, if approved) a motion after its voting period."""
    return gov.consortium.finalize_motion(motion_id)
