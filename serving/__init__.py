"""The temporary TF Serving the validator starts: launchers (a docker container or a local
process), the serving image's checks and the reaper of containers whose owner died. Never
imports Airflow (tests/unit/test_layers.py)."""
