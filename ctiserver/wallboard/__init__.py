"""The wallboard: `/wallboard` and `/ws/wallboard` (docs/wallboard-protocol.md)."""
