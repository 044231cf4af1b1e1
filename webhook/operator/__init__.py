"""The operator (`mcp-sidecar operator`, kopf): keeps the cluster consistent with the labels.

It copies the backend label from workloads into pod templates (propagation), creates the companion
`<name>-mcp` Service and the token Secret, and reports pods the admission server missed (pod audit
Events). controller.py wires kopf for the workloads; pod_watch.py watches only labelled pods (a
server-side label selector, plain JSON pages: kopf would watch every pod of the cluster); events.py
posts Events from a queue and remembers, from the cluster's own Events, what was already reported.
"""
