"""Black-box conformance suite for protocol v1 brokers (docs/CONFORMANCE.md)."""
