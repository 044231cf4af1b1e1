"""Abuse cases against real processes (issue 11, "Show it"): fuzzed admission, slow and stuck
clients, oversized results. Every test here carries the ``security`` marker (``-m security``)."""
