"""Object storage side of tfs-release: checkpoints, staging, versions, manifests, sync.

Imports neither Airflow nor TensorFlow, so the CLI, DAG tasks and the sync sidecar can all use it.
"""

__version__ = "0.1.0"
