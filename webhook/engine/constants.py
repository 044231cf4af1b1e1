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

#: Bearer-token auth of the sidecar (on by default). The operator creates this Secret in every
#: namespace with labelled workloads or pods and never overwrites it; the webhook mounts it.
ANNOTATION_AUTH = f"{DOMAIN}/auth"
AUTH_NONE = "none"
AUTH_TOKEN = "token"
AUTH_VOLUME_NAME = "mcp-sidecar-auth"
AUTH_MOUNT_PATH = "/var/run/secrets/mcp-sidecar"
TOKEN_SECRET_NAME = "mcp-sidecar-token"
TOKEN_SECRET_KEY = "token"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "mcp-sidecar-injector"
LABEL_TOKEN_SECRET = f"{DOMAIN}/token"
