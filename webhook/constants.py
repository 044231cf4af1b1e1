"""Label and annotation keys: the product contract of DESIGN.md, in one place."""

DOMAIN = "mcp-sidecar.dox"

#: Pod (template) label that opts a pod in; its value names the backend.
LABEL_BACKEND = f"{DOMAIN}/backend"
#: Namespace label; the value ``disabled`` turns injection off for the namespace.
LABEL_NAMESPACE_INJECTION = f"{DOMAIN}/injection"
NAMESPACE_DISABLED_VALUE = "disabled"

#: Pod annotation; ``"false"`` opts a labelled pod out.
ANNOTATION_INJECT = f"{DOMAIN}/inject"
#: Written by the injector: JSON audit record; its presence makes re-injection a no-op.
ANNOTATION_STATUS = f"{DOMAIN}/status"

SIDECAR_CONTAINER_NAME = "mcp-sidecar"
SIDECAR_PORT_NAME = "mcp"
TMP_VOLUME_NAME = "mcp-sidecar-tmp"
