"""What start-up says about who may call: the keys (config keys and issued keys alike) and
whether an admin key is configured."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.authentication import Authenticator

__all__ = ["AccessState", "access_state"]


@dataclass(frozen=True, slots=True)
class AccessState:
    """Who may call, as the key store says (config keys and issued keys alike)."""

    configured: int  # active keys from [[keys]]
    issued: int  # active keys issued through the admin API (`imagegate keys create`)
    revoked: int
    admin_key: bool

    @property
    def open(self) -> bool:
        """No key was ever configured or issued (a revoked key keeps the gateway closed)."""
        return not (self.configured or self.issued or self.revoked)


async def access_state(auth: Authenticator) -> AccessState:
    keys = await auth.keys.list()
    active = [k for k in keys if k.active]
    configured = sum(1 for k in active if k.source == "config")
    return AccessState(
        configured=configured,
        issued=len(active) - configured,
        revoked=len(keys) - len(active),
        admin_key=bool(auth.admin_key),
    )
