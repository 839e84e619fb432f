"""Release alerts: the ``alerts``/``report_base_url`` config (registry/config.py), the message format
(plugins/tfs_release_airflow/alert_message.py, stdlib: tested here directly), and, through a
subprocess of the Airflow venv's python (``alerts_probe.py``), the message a callback context
yields, the provider notifiers chosen, and the DAG wiring (callbacks, the validate task's extra
link). Delivery to real receivers: tests/integration/plugins/test_alert_delivery.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from registry import config
from registry.errors import ConfigError
from tests.conftest import ROOT
from tests.unit.dags.test_dag_integrity import RELEASE, airflow_env

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow import alert_message as am  # noqa: E402

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alerts_probe.py")
ALERTS = {"slack_conn_id": "slack_alerts", "smtp_conn_id": "smtp_alerts", "email_to": ["oncall@example.com"]}
RUN_ID = "manual__2026-01-02T03:04:05.678+00:00"
CKPT = "s3://training/shapes-classifier/checkpoints/ckpt-601"
REPORT = "s3://serving/shapes-classifier/_reports/manual__2026-01-02T03:04:05.678+00:00-t1/index.html"
CHECKS = [
    {"name": "contract: SavedModel signatures", "passed": True, "detail": "matches the contract", "numbers": {}},
    {"name": "parity: REST serving_default vs exporter", "passed": False,
     "detail": "0001.png: probs: max |served - reference| = 0.0123 > 0.001",
     "numbers": {"max_abs_diff": 0.012345678, "images": 6, "failed": 1}},
    {"name": "golden: 0002.png", "passed": False, "detail": "label 2 not in top-1 [0]",
     "numbers": {"label": 2, "top_k": [0], "p_label": 0.312345}},
    {"name": "gx: probs between 0 and 1", "passed": True, "detail": "ok", "numbers": {"rows": 6, "unexpected": 0}},
]


# ---- config -------------------------------------------------------------------------------------

def _load(tmp_path, **extra):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"serving": "s3://serving/m/", **extra}}}))
    return config.load(str(path)).model("m")


def test_alerts_config_is_parsed_into_a_typed_object(tmp_path):
    m = _load(tmp_path, alerts={**ALERTS, "email_from": "Release Bot <bot@example.com>", "on_success": True},
              report_base_url="https://reports.internal/s3/")
    a = m.extra["alerts"]
    assert isinstance(a, config.AlertsConfig)
    assert (a.slack_conn_id, a.smtp_conn_id, a.email_to, a.on_success) == (
        "slack_alerts", "smtp_alerts", ("oncall@example.com",), True)
    assert a.email_from == "Release Bot <bot@example.com>"
    assert m.extra["report_base_url"] == "https://reports.internal/s3"
    only_slack = _load(tmp_path, alerts={"slack_conn_id": "s"}).extra["alerts"]
    assert (only_slack.smtp_conn_id, only_slack.email_to, only_slack.on_success) == (None, (), False)
    assert (a.report_link, _load(tmp_path, alerts={**ALERTS, "report_link": "presigned"}).extra["alerts"].report_link
            ) == ("airflow", "presigned")
    assert _load(tmp_path, alerts={"smtp_conn_id": "x", "email_to": "a@b.c"}).extra["alerts"].email_to == ("a@b.c",)
    assert "alerts" not in _load(tmp_path).extra


@pytest.mark.parametrize("alerts,match", [
    ({**ALERTS, "webhook": "x"}, r"alerts has unknown key\(s\) \['webhook'\]"),
    ({"slack_conn_id": "s", "email_to": ["a@b.c"]}, "email_to/email_from but no smtp_conn_id"),
    ({"smtp_conn_id": "smtp"}, "smtp_conn_id is set but email_to is missing"),
    ({"on_success": True}, "names no channel"),
    ({}, "names no channel"),
    ({**ALERTS, "email_to": ["not-an-address"]}, "email_to must be an e-mail address"),
    ({**ALERTS, "email_to": []}, "email_to must be an e-mail address"),
    ({**ALERTS, "email_from": "nobody"}, "email_from must be an e-mail address"),
    ({**ALERTS, "slack_conn_id": "has space"}, "slack_conn_id must be an Airflow connection id"),
    ({**ALERTS, "on_success": "yes"}, "on_success must be true or false"),
    ({**ALERTS, "report_link": "public"}, r"report_link must be one of \['airflow', 'presigned'\]"),
    (["slack_alerts"], "alerts must be a mapping"),
])
def test_bad_alerts_config_gives_a_specific_error(tmp_path, alerts, match):
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, alerts=alerts)


@pytest.mark.parametrize("url", ["reports.internal/s3", "ftp://x/y", "https://", 7])
def test_bad_report_base_url_is_refused(tmp_path, url):
    with pytest.raises(ConfigError, match="report_base_url must be an http"):
        _load(tmp_path, report_base_url=url)


# ---- message format (pure) ----------------------------------------------------------------------

def _failure(**kw) -> am.Alert:
    base = dict(event="failure", model="shapes-classifier", dag_id="release__shapes-classifier", run_id=RUN_ID,
                run_url=am.run_url("http://airflow.internal:8080/", "release__shapes-classifier", RUN_ID),
                checkpoint=CKPT, step=601, task_id="validate", try_number=2,
                reason="tfs-release validate failed (exit 1, a check failed): 2 check(s) failed",
                checks=CHECKS, report=REPORT, report_link="https://reports.internal/s3/serving/x/index.html")
    return am.Alert(**{**base, **kw})


def test_failure_message_lists_each_failed_check_with_its_numbers():
    text = am.text(_failure())
    assert text.splitlines() == [
        "[tfs-release] shapes-classifier: release FAILED at validate: 2 absolute check(s) failed (golden, parity)",
        "model:       shapes-classifier",
        f"checkpoint:  {CKPT} (step 601)",
        "failed task: validate (try 2)",
        "cause:       2 absolute check(s) failed (golden, parity)",
        "reason:      tfs-release validate failed (exit 1, a check failed): 2 check(s) failed",
        "production:  nothing was published; production serves what it served before",
        "next:        the report shows each failed image with the model's answer; a better checkpoint is "
        "released when it lands",
        f"next:        to validate it again (e.g. after a fix): trigger release__shapes-classifier with "
        f"checkpoint={CKPT} and force=true",
        "failed checks (2 of 4):",
        "  - parity: REST serving_default vs exporter: 0001.png: probs: max |served - reference| = 0.0123 > 0.001"
        " [max_abs_diff=0.01235, images=6, failed=1]",
        "  - golden: 0002.png: label 2 not in top-1 [0] [label=2, top_k=[0], p_label=0.3123]",
        "report:      https://reports.internal/s3/serving/x/index.html",
        "airflow run: http://airflow.internal:8080/dags/release__shapes-classifier/runs/"
        "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00",
    ]
    assert am.subject(_failure()) == ("[tfs-release] shapes-classifier: release FAILED at validate: "
                                      "2 absolute check(s) failed (golden, parity)")


def test_failure_without_a_verdict_names_the_task_and_reason():
    text = am.text(_failure(task_id="export", checks=[], report=None, report_link=None, try_number=1,
                            reason="tfs-release export failed (exit 2, bad input or configuration): NaN weights"))
    assert "failed task: export (try 1)" in text
    assert "reason:      tfs-release export failed (exit 2, bad input or configuration): NaN weights" in text
    assert "failed checks" not in text and "report:" not in text
    assert am.text(_failure(checkpoint=None, step=None, task_id="newest_checkpoint")).splitlines()[2] == \
        "checkpoint:  (not resolved)"


def test_long_lists_and_details_are_clipped_but_counted():
    many = [{"name": f"golden: {i:04d}.png", "passed": False, "detail": "x" * 1000, "numbers": {"p_label": 0.1}}
            for i in range(25)]
    text = am.text(_failure(checks=many, reason="r" * 5000))
    assert "failed checks (25 of 25):" in text
    assert text.count("  - golden: ") == am.MAX_CHECKS
    assert "  (+15 more in the report)" in text
    assert max(len(ln) for ln in text.splitlines()) < am.MAX_REASON + 40
    assert REPORT not in am.text(_failure(report_link="https://r/x"))  # the link replaces the uri
    assert f"report:      {REPORT}" in am.text(_failure(report_link=None))  # no link: the uri at least


def test_success_message():
    a = _failure(event="success", version=7, reason=None, task_id="publish",
                 checks=[c for c in CHECKS if c["passed"]])
    assert am.subject(a) == "[tfs-release] shapes-classifier: version 7 published"
    lines = am.text(a).splitlines()
    assert "version:     7" in lines and "checks:      all 2 passed" in lines
    assert not any(ln.startswith(("failed", "reason")) for ln in lines)


def test_links():
    assert am.report_url("s3://serving/m/_reports/run+1:x/index.html", "https://proxy/s3/") == \
        "https://proxy/s3/serving/m/_reports/run%2B1%3Ax/index.html"
    assert am.run_url("http://h:8080", "release__m", "scheduled__2026-01-01T00:00:00+00:00") == \
        "http://h:8080/dags/release__m/runs/scheduled__2026-01-01T00%3A00%3A00%2B00%3A00"


def test_html_body_is_the_same_text_escaped_with_links():
    text = "a <b> & c\nreport:      https://r/x?a=1&b=2\n"
    body = am.html_body(text)
    assert body.startswith("<pre") and "&lt;b&gt; &amp; c" in body
    assert '<a href="https://r/x?a=1&amp;b=2">https://r/x?a=1&amp;b=2</a>' in body
    import html as html_mod
    assert html_mod.unescape(re.sub(r"<[^>]+>", "", body)) == text


# ---- the Airflow side, in the Airflow venv ------------------------------------------------------

@pytest.fixture(scope="module")
def airflow_python() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


AWS_CONN = {"conn_type": "aws", "login": "AKIDALERTSUNIT", "password": "unit-secret-not-in-messages",
            "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}}


def run_probe(airflow_python, tmp_path, mode, arg, **env) -> dict:
    out = tmp_path / f"probe-{mode}.json"
    if isinstance(arg, dict):
        (tmp_path / "spec.json").write_text(json.dumps(arg))
        arg = str(tmp_path / "spec.json")
    p = subprocess.run([airflow_python, PROBE, mode, arg, str(out)], capture_output=True, text=True, timeout=300,
                       env=airflow_env(tmp_path / "airflow-home", AIRFLOW_CONN_AWS_DEFAULT=json.dumps(AWS_CONN),
                                       **env), cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


def spec(**context) -> dict:
    ctx = {"dag_id": "release__shapes-classifier", "run_id": RUN_ID, "task_id": "validate", "try_number": 1,
           "exception": "tfs-release validate failed (exit 1, a check failed): {{ ti.secret }} not rendered",
           "xcom": {"newest_checkpoint|return_value": {"uri": CKPT, "step": 601, "published_as": None},
                    "validate|verdict": {"passed": False, "checks": CHECKS, "report": REPORT,
                                         "checkpoint": CKPT}}}
    ctx.update(context)
    return {"model": "shapes-classifier", "alerts": ALERTS, "event": "failure", "context": ctx}


def test_context_to_message_with_report_base_url(airflow_python, tmp_path):
    s = {**spec(), "report_base_url": "https://reports.internal/s3"}
    r = run_probe(airflow_python, tmp_path, "message", s, AIRFLOW__API__BASE_URL="https://airflow.internal/")
    lines = r["text"].splitlines()
    assert r["subject"] == lines[0] == ("[tfs-release] shapes-classifier: release FAILED at validate: "
                                        "2 absolute check(s) failed (golden, parity)")
    assert f"checkpoint:  {CKPT} (step 601)" in lines
    assert "reason:      tfs-release validate failed (exit 1, a check failed): {{ ti.secret }} not rendered" in lines
    assert "  - golden: 0002.png: label 2 not in top-1 [0] [label=2, top_k=[0], p_label=0.3123]" in lines
    assert ("report:      https://reports.internal/s3/serving/shapes-classifier/_reports/"
            "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00-t1/index.html") in lines
    assert ("airflow run: https://airflow.internal/dags/release__shapes-classifier/runs/"
            "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00") in lines
    assert r["notifiers"] == [
        ["slack (slack_alerts)", "airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier"],
        ["e-mail (smtp_alerts)", "tfs_release_airflow.alerts.TextAndHtmlNotifier"]]  # SmtpNotifier + text/plain
    assert r["pulls"] == ["newest_checkpoint|return_value", "validate|verdict"]


def test_without_report_base_url_the_link_is_the_airflow_report_endpoint(airflow_python, tmp_path):
    s = {**spec(), "reports_root": "s3://serving/shapes-classifier/_reports/"}
    r = run_probe(airflow_python, tmp_path, "message", s, AIRFLOW__API__BASE_URL="https://airflow.internal/")
    assert ("report:      https://airflow.internal/tfs-release/reports/shapes-classifier/"
            "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00-t1/index.html") in r["text"].splitlines()
    assert "X-Amz-" not in r["text"] and "AKIDALERTSUNIT" not in r["text"]
    # a report somewhere else (not under this model's _reports/): no link, the s3:// uri is shown
    s["reports_root"] = "s3://serving/other-model/_reports/"
    r = run_probe(airflow_python, tmp_path, "message", s)
    assert f"report:      {REPORT}" in r["text"].splitlines()


def test_report_link_presigned_signs_with_the_model_connection(airflow_python, tmp_path):
    r = run_probe(airflow_python, tmp_path, "message", {**spec(), "alerts": {**ALERTS, "report_link": "presigned"},
                                                        "reports_root": "s3://serving/shapes-classifier/_reports/"})
    [link] = [ln.split(None, 1)[1] for ln in r["text"].splitlines() if ln.startswith("report:")]
    u = urlsplit(link)
    q = parse_qs(u.query)
    assert f"{u.scheme}://{u.netloc}" == AWS_CONN["extra"]["endpoint_url"]
    assert u.path == "/" + REPORT[len("s3://"):].replace(":", "%3A").replace("+", "%2B")
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == ["604800"]
    assert q["X-Amz-Credential"][0].startswith("AKIDALERTSUNIT/")
    assert AWS_CONN["password"] not in r["text"]
    assert "airflow run: http://localhost:8080/dags/" in r["text"]  # no [api] base_url: Airflow's default


def test_failures_outside_validation_and_unreadable_xcom_still_alert(airflow_python, tmp_path):
    s = spec(task_id="newest_checkpoint", xcom={}, params={"checkpoint": None},
             exception="no complete checkpoint under s3://training/shapes-classifier/checkpoints/")
    r = run_probe(airflow_python, tmp_path, "message", s)
    assert "failed task: newest_checkpoint (try 1)" in r["text"]
    assert "checkpoint:  (not resolved)" in r["text"] and "failed checks" not in r["text"]
    s = spec(task_id="publish", exception="StorageError: the serving bucket refused the claim", xcom={
        "newest_checkpoint|return_value": {"uri": CKPT, "step": 601},
        "validate|return_value": {"passed": True, "checks": CHECKS[:1], "report": REPORT}})
    r = run_probe(airflow_python, tmp_path, "message", {**s, "report_base_url": "https://r.internal"})
    assert "failed task: publish (try 1)" in r["text"] and "checks:      all 1 passed" in r["text"]
    assert "report:      https://r.internal/serving/shapes-classifier/_reports/" in r["text"]
    assert r["pulls"] == ["newest_checkpoint|return_value", "validate|verdict", "validate|return_value"]
    s = spec(xcom_error="XCom backend unavailable")
    r = run_probe(airflow_python, tmp_path, "message", s)
    assert "failed task: validate (try 1)" in r["text"]
    assert any("cannot read XCom validate/verdict: XCom backend unavailable" in ln for ln in r["logs"])


def _dag_config(tmp_path, n: int, **per_model) -> str:
    models = {}
    for i in range(n):
        name = f"model-{i:02d}"
        models[name] = {"task": "classification", "checkpoints": f"s3://training/{name}/checkpoints/",
                        "serving": f"s3://serving/{name}/", "golden": "demo/golden/shapes-classifier/",
                        "experiment": "resnet_imagenet", "input_size": [64, 64], "schedule": "@daily",
                        **per_model.get(name, {})}
    path = tmp_path / "config" / "models.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"models": models}))
    return str(path)


def test_dag_wiring_callbacks_and_report_link(airflow_python, tmp_path):
    cfg = _dag_config(tmp_path, 20, **{
        "model-00": {"alerts": ALERTS},
        "model-01": {"alerts": {**ALERTS, "on_success": True}, "report_base_url": "https://reports.internal/s3"},
    })
    t0 = time.monotonic()
    r = run_probe(airflow_python, tmp_path, "dag", RELEASE, TFS_RELEASE_CONFIG=cfg)
    wall = time.monotonic() - t0
    assert r["import_errors"] == {}
    tasks = ("newest_checkpoint", "is_new", "export", "validate", "publish")
    note = [["function", None, None]]  # run_notes.record_failure: the run's note, with or without alerts
    failure = note + [["ReleaseAlert", "failure", "s3://serving/model-00/_reports/"]]
    d0, d1, d2 = r["dags"]["release__model-00"], r["dags"]["release__model-01"], r["dags"]["release__model-02"]
    # no report_base_url: the validate task still links to the report, through the API server's endpoint
    endpoint_link = [["ReportLink", "Validation report", "_link_ReportLink", None]]
    assert {t: (d0[t]["on_failure"], d0[t]["on_success"], d0[t]["links"]) for t in tasks} == \
        {t: (failure, [], endpoint_link if t == "validate" else []) for t in tasks}
    assert all(d0[t]["on_failure"] == failure for t in d0 if t != "doc_md")  # also tasks added later
    assert d1["publish"]["on_success"] == [["ReleaseAlert", "success", "s3://serving/model-01/_reports/"]]
    assert all(d1[t]["on_success"] == [] for t in tasks if t != "publish")
    assert d1["validate"]["links"] == [["ReportLink", "Validation report", "_link_ReportLink",
                                        "https://reports.internal/s3"]]
    assert d1["validate"]["serialized_links"] == {"Validation report": "_link_ReportLink"}
    assert all(d1[t]["links"] == [] for t in tasks if t != "validate")
    assert {t: (d2[t]["on_failure"], d2[t]["on_success"], d2[t]["links"]) for t in tasks} == \
        {t: (note, [], endpoint_link if t == "validate" else []) for t in tasks}  # no alerts key: no alert
    assert d2["validate"]["serialized_links"] == {"Validation report": "_link_ReportLink"}
    assert ("Alerts: on failure and on publish via Slack (`slack_alerts`) and e-mail (`smtp_alerts` to "
            "oncall@example.com); report link: `https://reports.internal/s3/<bucket>/<key>`") in d1["doc_md"]
    assert "Alerts: on failure via Slack" in d0["doc_md"] and "through Airflow's API server" in d0["doc_md"]
    assert "Alerts: none configured" in d2["doc_md"]
    # the parse time is a benchmark's target (bench/dag_parse.py), not this test's: a loaded CI machine
    # took 2.2 s here once
    print(f"\n20 models (2 with alerts): model_release.py parsed in {r['seconds']:.3f}s; probe wall {wall:.1f}s")


def test_a_bad_alerts_block_breaks_that_models_dag_naming_it(airflow_python, tmp_path):
    cfg = _dag_config(tmp_path, 2, **{"model-00": {"alerts": {"slack_conn_id": "s", "email_too": ["a@b.c"]}}})
    r = run_probe(airflow_python, tmp_path, "dag", RELEASE, TFS_RELEASE_CONFIG=cfg)
    assert r["import_errors"] == {}
    broken = r["dags"]["release__model-00"]
    assert "models.model-00.alerts has unknown key(s) ['email_too']" in broken["doc_md"]
    assert set(broken) == {"config_error", "doc_md"}  # it cannot release
    assert "validate" in r["dags"]["release__model-01"]  # the other model is unaffected


# ---- the run's own failure alert (the DAG's on_failure_callback) --------------------------------

def test_run_failure_message_says_timed_out_waiting_task_and_nothing_published():
    a = _failure(event="run_failure", task_id="approve", try_number=1, reason=None, checks=CHECKS[:1],
                 run_reason="timed_out", run_timeout_s=14400.0, awaiting_input=True,
                 published="nothing (the run ended before publish)")
    assert am.subject(a) == ("[tfs-release] shapes-classifier: release run TIMED OUT at approve (awaiting input); "
                             "nothing published")
    lines = am.text(a).splitlines()
    assert lines[:6] == [
        am.subject(a),
        "model:       shapes-classifier",
        f"checkpoint:  {CKPT} (step 601)",
        "run:         timed out: the run's timeout (timeouts.run, 14400s) passed; Airflow skipped the unfinished tasks",
        "waiting:     approve (try 1): awaiting input (Approve / Reject), no decision yet",
        "published:   nothing (the run ended before publish)",
    ]
    assert not any(ln.startswith(("failed task", "reason")) for ln in lines)
    other = _failure(event="run_failure", task_id="confirm_rollout", reason=None, run_reason="all_tasks_deadlocked",
                     published="version 4 (published by this run before it ended; not a complete release)")
    assert am.subject(other) == "[tfs-release] shapes-classifier: release run FAILED at confirm_rollout"
    assert "run:         failed: no task could run any more (all unfinished tasks deadlocked)" in am.text(other)
    assert "waiting:     confirm_rollout (try 2): not finished" in am.text(other)


RUN_FAILURE_XCOM = {"newest_checkpoint|return_value": {"uri": CKPT, "step": 601, "published_as": None},
                    "validate|return_value": {"passed": True, "checks": CHECKS[:1], "report": REPORT}}


def run_failure_spec(cfg: str, **kw) -> dict:
    return {"config": cfg, "dag_file": RELEASE, "dag_id": "release__model-00", "run_id": RUN_ID,
            "reason": "timed_out", "task_id": "approve", "try_number": 1, "xcom": RUN_FAILURE_XCOM, **kw}


def test_the_release_dag_alerts_a_run_that_timed_out_while_approve_waited(airflow_python, tmp_path):
    """The DAG's own on_failure_callback, run by Airflow's DAG-processor code with the request the
    scheduler makes for a dagrun_timeout (reason timed_out; last_ti: the unfinished task started last,
    here approve awaiting input): one message saying so, and that nothing was published."""
    cfg = _dag_config(tmp_path, 2, **{"model-00": {"alerts": ALERTS, "approval": "required",
                                                   "timeouts": {"run": 7200}}})
    r = run_probe(airflow_python, tmp_path, "dag-callback", run_failure_spec(cfg),
                  AIRFLOW__API__BASE_URL="https://airflow.internal/")
    assert r["import_errors"] == {}
    assert r["callbacks"] == [["RunFailureAlert", 7200.0]]
    [msg] = r["sent"]
    assert msg["subject"] == ("[tfs-release] model-00: release run TIMED OUT at approve (awaiting input); "
                              "nothing published")
    lines = msg["text"].splitlines()
    assert lines[0] == msg["subject"]
    assert f"checkpoint:  {CKPT} (step 601)" in lines
    assert ("run:         timed out: the run's timeout (timeouts.run, 7200s) passed; Airflow skipped the "
            "unfinished tasks") in lines
    assert "waiting:     approve (try 1): awaiting input (Approve / Reject), no decision yet" in lines
    assert "published:   nothing (the run ended before publish)" in lines
    assert "checks:      all 1 passed" in lines
    assert ("airflow run: https://airflow.internal/dags/release__model-00/runs/"
            "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00") in lines
    assert "newest_checkpoint|return_value" in r["pulls"] and "publish|return_value" in r["pulls"]

    # a run whose failed task already alerted (reason task_failure): no second alert
    r = run_probe(airflow_python, tmp_path, "dag-callback", run_failure_spec(cfg, reason="task_failure",
                                                                             task_id="validate"))
    assert r["sent"] == [] and r["callbacks"] == [["RunFailureAlert", 7200.0]]
    # timed out after publish (production not confirmed yet): the version is named, not "nothing"
    r = run_probe(airflow_python, tmp_path, "dag-callback", run_failure_spec(
        cfg, task_id="clean_staging", xcom={**RUN_FAILURE_XCOM, "publish|return_value": {"version": 5}}))
    [msg] = r["sent"]
    assert msg["subject"] == "[tfs-release] model-00: release run TIMED OUT at clean_staging"
    assert "published:   version 5 (published by this run before it ended; not a complete release)" in \
        msg["text"].splitlines()
    # no task in the request (Airflow drops one it cannot represent): still one alert
    r = run_probe(airflow_python, tmp_path, "dag-callback", run_failure_spec(cfg, task_id=None))
    [msg] = r["sent"]
    assert msg["subject"] == "[tfs-release] model-00: release run TIMED OUT"
    assert "waiting:     (unknown)" in msg["text"]


def test_the_run_failure_callback_is_set_only_with_alerts(airflow_python, tmp_path):
    cfg = _dag_config(tmp_path, 2, **{"model-00": {"alerts": ALERTS}})
    r = run_probe(airflow_python, tmp_path, "dag", RELEASE, TFS_RELEASE_CONFIG=cfg)
    assert r["dag_on_failure"] == {"release__model-00": [["RunFailureAlert", 14400.0]], "release__model-01": []}
