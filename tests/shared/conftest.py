"""Fixtures of the shared-mode tests."""

from tests.shared.backends import shared

__all__ = ["shared"]
