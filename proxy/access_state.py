"""What start-up says about who may call: the keys table (config keys and issued keys alike)
and whether an admin key is configured."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.access import Gatekeeper

__all__ = ["AccessState", "access_state"]


@dataclass(frozen=True, slots=True)
class AccessState:
    """Who may call, as the ledger's keys table says (config keys and issued keys alike)."""

    configured: int  # active keys from [[keys]]
    issued: int  # active keys issued through the admin API (`imagegate keys create`)
    revoked: int
    admin_key: bool

    @property
    def open(self) -> bool:
        """No key was ever configured or issued (a revoked key keeps the gateway closed)."""
        return not (self.configured or self.issued or self.revoked)


async def access_state(gate: Gatekeeper) -> AccessState:
    keys = await asyncio.to_thread(gate.ledger.list_keys)
    active = [k for k in keys if k.active]
    configured = sum(1 for k in active if k.source == "config")
    return AccessState(
        configured=configured,
        issued=len(active) - configured,
        revoked=len(keys) - len(active),
        admin_key=bool(gate.cost.admin_key),
    )
