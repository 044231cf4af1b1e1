"""The operator (`mcp-sidecar operator`, kopf): keeps the cluster consistent with the labels.

It copies the backend label from workloads into pod templates (propagation), creates the companion
`<name>-mcp` Service and the token Secret, and reports pods the admission server missed (pod audit
Events). controller.py wires the kopf handlers; the other modules are the pure plans they apply.
"""
