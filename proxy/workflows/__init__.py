"""The client commands (`imagegate batch`, `ab`, `report`, `keys`): clients of a gateway.

They import nothing from the server shell around them, only `policies/` values;
`gateway.GatewayClient` is the one place they talk to a gateway."""

from __future__ import annotations

__all__: list[str] = []
