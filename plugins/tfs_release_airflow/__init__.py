"""Airflow glue for tfs-release: run the worker-env step command, hand S3 settings from an Airflow
connection to it and to ``registry/``. No TensorFlow here; ``step_command`` imports no Airflow."""
