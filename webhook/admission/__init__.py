"""The admission server (`mcp-sidecar serve`): AdmissionReview in, engine decision out, over TLS.

It holds no Kubernetes credentials: review.py turns a review into the engine's answer, server.py serves
it (uvicorn, certificate and configuration reloads, metrics), httpguard.py bounds slow or greedy clients.
"""
