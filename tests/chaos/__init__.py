"""The fault-injection suite (``make chaos``, marker ``chaos``): docs/RELIABILITY.md."""
