"""The benchmark: our broker beside a minimal Python forwarder and zmq.proxy.

``python -m bench.run`` (or ``make bench``) runs it; docs/PERFORMANCE.md
explains the figures and records a run.
"""
