"""Production workflows that run through a gateway: `imagegate batch` (more to come)."""

from __future__ import annotations

__all__: list[str] = []
