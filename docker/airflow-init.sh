#!/bin/bash
# The compose stack's one-shot init job (runs before the Airflow services start):
#   1. the metadata database schema (airflow db migrate);
#   2. the admin login: SimpleAuthManager users come from AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS,
#      their passwords from the file AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE (a volume the
#      API server reads), written here from AIRFLOW_ADMIN_PASSWORD;
#   3. the connections: aws_default (S3 endpoint + the pipeline identity's keys: read training,
#      write serving; never the store's root keys), slack_webhook_default (alerts),
#      smtp_default (e-mail), tfs_release_signing (the private key that signs published versions,
#      from SIGNING_KEY_PEM_B64), from the environment (.env), replaced at every run.
# Secrets arrive only through the environment; nothing is printed but the names.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD (see .env.example)}"
: "${S3_PIPELINE_ACCESS_KEY:?set S3_PIPELINE_ACCESS_KEY (see .env.example)}"
: "${S3_PIPELINE_SECRET_KEY:?set S3_PIPELINE_SECRET_KEY (see .env.example)}"
t0=$(date +%s)
airflow db migrate >/tmp/db-migrate.log 2>&1 || { tail -n 40 /tmp/db-migrate.log; exit 1; }
echo "airflow-init: database migrated in $(( $(date +%s) - t0 ))s"
conns=$(mktemp /tmp/connections.XXXXXX.json)
trap 'rm -f "$conns"' EXIT
python - "$conns" <<'PY'
import json, os, sys
e = os.environ.get
user = e("AIRFLOW_ADMIN_USER", "admin")
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
conns = {
    "aws_default": {"conn_type": "aws", "login": e("S3_PIPELINE_ACCESS_KEY"), "password": e("S3_PIPELINE_SECRET_KEY"),
                    "extra": json.dumps({"endpoint_url": e("S3_ENDPOINT_URL", "http://s3:9000"),
                                         "region_name": e("S3_REGION", "us-east-1")})},
    "slack_webhook_default": {"conn_type": "slackwebhook", "password": e("SLACK_WEBHOOK_URL", "")},
    "smtp_default": {"conn_type": "smtp", "host": e("SMTP_HOST", "localhost"),
                     "port": int(e("SMTP_PORT", "25") or 25), "login": e("SMTP_USER", ""),
                     "password": e("SMTP_PASSWORD", ""),
                     "extra": json.dumps({"from_email": e("ALERT_EMAIL_FROM", "tfs-release@localhost"),
                                          "disable_tls": e("SMTP_STARTTLS", "true").lower() != "true",
                                          "disable_ssl": True})},
}
if e("SIGNING_KEY_PEM_B64"):
    import base64
    conns["tfs_release_signing"] = {"conn_type": "generic",
                                    "password": base64.b64decode(e("SIGNING_KEY_PEM_B64")).decode()}
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump(conns, fh)
print(f"airflow-init: admin user {user!r}; connections {', '.join(conns)}")
PY
airflow connections import --overwrite "$conns" >/dev/null
echo "airflow-init: done in $(( $(date +%s) - t0 ))s"
