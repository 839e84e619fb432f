"""The validate task's "Validation report" extra link (plugins/tfs_release_airflow/report_link.py), as
the worker computes it, through a subprocess of the Airflow venv's python (tests/e2e/
report_link_probe.py: the release DAG parsed by DagBag, the task's own link object). No service:
that the URL really opens the report is tests/e2e/test_report_link.py.
"""
from __future__ import annotations

import json
import subprocess

import yaml

from tests.conftest import ROOT
from tests.unit.dags.test_dag_integrity import RELEASE, airflow_env

PROBE = f"{ROOT}/tests/e2e/report_link_probe.py"
RUN = "scheduled__2026-03-04T05:00:00+00:00-t2"
REPORT = f"s3://serving/plain/_reports/{RUN}/index.html"


def test_the_link_is_the_report_endpoint_unless_report_base_url_is_set(tmp_path):
    venv = subprocess.run([f"{ROOT}/bin/venv", "airflow"], check=True, capture_output=True, text=True).stdout.strip()
    base = {"task": "classification", "golden": "demo/golden/shapes-classifier/", "experiment": "resnet_imagenet",
            "input_size": [64, 64]}
    cfg = tmp_path / "config" / "models.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({"models": {
        "plain": {**base, "checkpoints": "s3://training/plain/checkpoints/", "serving": "s3://serving/plain/"},
        "proxied": {**base, "checkpoints": "s3://training/proxied/checkpoints/", "serving": "s3://serving/plain/",
                    "report_base_url": "https://reports.internal/s3"}}}))
    env = airflow_env(tmp_path / "airflow-home", TFS_RELEASE_CONFIG=str(cfg),
                      AIRFLOW__API__BASE_URL="https://airflow.internal/team-a/")
    p = subprocess.run([f"{venv}/bin/python", PROBE, RELEASE, REPORT, "release__plain", "release__proxied"],
                       env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["import_errors"] == {}
    plain, proxied = out["dags"]["release__plain"], out["dags"]["release__proxied"]
    # no report_base_url: [api] base_url (its path kept) + the endpoint; the run id quoted
    assert plain["link"] == ["ReportLink", "Validation report", "_link_ReportLink", None, "plain",
                             "s3://serving/plain/_reports/"]
    assert plain["url"] == ("https://airflow.internal/team-a/tfs-release/reports/plain/"
                            "scheduled__2026-03-04T05%3A00%3A00%2B00%3A00-t2/index.html")
    # only the XCom key is serialized: the API server reads the stored value
    assert plain["serialized_links"] == proxied["serialized_links"] == {"Validation report": "_link_ReportLink"}
    # report_base_url: the proxy over the bucket, as before
    assert proxied["url"] == ("https://reports.internal/s3/serving/plain/_reports/"
                              "scheduled__2026-03-04T05%3A00%3A00%2B00%3A00-t2/index.html")
