"""What more than one program uses at run time: Kubernetes client access and error wording (kube.py),
Prometheus metrics (metrics.py), and the configuration file watched on disk (config_store.py)."""
