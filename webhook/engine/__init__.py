"""The injection engine: pure functions from (pod, configuration) to a decision and a JSON patch.

No I/O and no Kubernetes client here (tests/webhook/test_layout.py enforces it): the admission server,
the operator and the CLI all call `injection.evaluate` and get the same answer for the same pod.
A pod goes config -> overrides (annotations) -> detect (ports, TLS, passwords) -> render -> patch.
"""
