"""The lifecycle of a model's versions in production: confirmation, rollback, canary labels, what
production serves. No Airflow here (the DAGs and the CLI call it)."""
