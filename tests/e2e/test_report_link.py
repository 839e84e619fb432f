"""The validation report through Airflow's API server (plugins/tfs_release_airflow/report_app.py) and
the validate task's default "Validation report" extra link (report_link.py) that points at it.

Real parts: one `airflow standalone` for the whole module (API server with this project's plugins,
simple auth manager, SQLite; started by services.start_airflow), SeaweedFS with its credentials only
in the Airflow connections. No release run: the report files are uploaded into the serving bucket
the way `tfs-release validate` uploads them (registry.transfer.upload_dir), under
``<model>/_reports/<run>/``.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

import services
from tests.conftest import ROOT
from tests.e2e.conftest import MANUAL_ONLY

pytestmark = [pytest.mark.slow]
MODEL, OTHER, BROKEN, NO_CONN = "shapes-classifier", "other-model", "bad-creds", "no-conn"
RUN = "manual__2026-01-02T03:04:05.678+00:00-t1"  # a real run id shape: ':' and '+' in the path
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_link_probe.py")
RELEASE = os.path.join(ROOT, "dags", "model_release.py")


def png_bytes() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


REPORT = {
    "index.html": ('<!doctype html><html><body><h1>shapes-classifier — validation FAILED</h1>'
                   '<img src="pic.png"><a href="gx/index.html">Data Docs</a></body></html>').encode(),
    "pic.png": png_bytes(),
    "verdict.json": json.dumps({"passed": False}).encode(),
    "gx/index.html": b"<html><body>great-expectations Data Docs</body></html>",
}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def get(url: str, **headers) -> tuple[int, dict, bytes]:
    """GET without following redirects: (status, headers, body)."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def stack(seaweedfs, tmp_path_factory):
    """Serving buckets with a report, a models.yaml naming them, one airflow standalone."""
    from registry.s3 import make_client
    from registry.transfer import upload_dir
    tmp = tmp_path_factory.mktemp("report-link")
    serving = f"serving-{uuid.uuid4().hex[:10]}"
    s3 = make_client(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                     aws_secret_access_key=seaweedfs.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket=serving)
    local = tmp / "report"
    for rel, data in REPORT.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    upload_dir(s3, str(local), serving, f"{MODEL}/_reports/{RUN}/")
    upload_dir(s3, str(local), serving, f"{OTHER}/_reports/r1/")

    def model(name: str, **extra) -> dict:
        return {"task": "classification", "checkpoints": f"s3://training-none/{name}/checkpoints/",
                "serving": f"s3://{serving}/{name}/", "golden": "demo/golden/shapes-classifier/",
                "experiment": "resnet_imagenet", "input_size": [64, 64], **extra}

    config = tmp / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": {
        MODEL: model(MODEL), OTHER: model(OTHER, conn_id="aws_other"), BROKEN: model(BROKEN, conn_id="aws_bad"),
        NO_CONN: model(NO_CONN, conn_id="aws_nowhere")}}))
    conn = {"conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
            "extra": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"}}
    bad = {**conn, "password": "wrong-secret-for-the-test"}
    conns = {"aws_default": conn, "aws_other": conn, "aws_bad": bad}
    t0 = time.monotonic()
    af = services.start_airflow(str(tmp / "airflow-home"), config=str(config), conns=conns,
                                extra_env=MANUAL_ONLY)
    print(f"\nairflow standalone ready in {time.monotonic() - t0:.1f}s at {af.url} (log {af.log})")
    try:
        af.test_token = af.token()
        af.serving, af.config, af.conns, af.secret = serving, str(config), conns, seaweedfs.secret_key
        yield af
    finally:
        af.stop()


def url(af, model: str, run: str, path: str = "index.html") -> str:
    return f"{af.url}/tfs-release/reports/{model}/{urllib.parse.quote(run, safe='')}/{path}"


def test_the_report_is_streamed_with_its_bytes_and_type_to_a_logged_in_user(stack):
    af = stack
    bearer = {"Authorization": f"Bearer {af.test_token}"}
    t0 = time.monotonic()
    for rel, ctype in [("index.html", "text/html; charset=utf-8"), ("pic.png", "image/png"),
                       ("verdict.json", "application/json"), ("gx/index.html", "text/html; charset=utf-8")]:
        status, headers, body = get(url(af, MODEL, RUN, rel), **bearer)
        assert status == 200, (rel, body[:500], af.log)
        assert body == REPORT[rel], rel
        assert headers["content-type"] == ctype, (rel, headers)
        assert headers["content-length"] == str(len(REPORT[rel]))
        assert headers["x-content-type-options"] == "nosniff"
        assert not any(af.secret in v or "X-Amz-" in v or "s3://" in v for v in headers.values()), headers
    print(f"4 report files over the endpoint: {time.monotonic() - t0:.2f}s")

    # a relative link in the page resolves against the endpoint, so it goes through it too
    page = url(af, MODEL, RUN)
    status, _, body = get(urllib.parse.urljoin(page, "gx/index.html"), **bearer)
    assert status == 200 and body == REPORT["gx/index.html"]
    status, _, body = get(urllib.parse.urljoin(page, "pic.png"), **bearer)
    assert status == 200 and body == REPORT["pic.png"]
    # the run folder: index.html; without the trailing slash: a redirect to it (relative links)
    status, _, body = get(url(af, MODEL, RUN, ""), **bearer)
    assert status == 200 and body == REPORT["index.html"]
    status, headers, _ = get(url(af, MODEL, RUN, "")[:-1], **bearer)
    assert status == 307 and headers["location"] == urllib.parse.quote(RUN, safe="") + "/", headers

    # a browser clicking the extra link sends no Authorization header but the UI's `_token` cookie:
    # the simple auth manager's login page stores the /auth/token access token there (Path=/)
    status, headers, body = get(page, Cookie=f"_token={af.test_token}")
    assert status == 200 and body == REPORT["index.html"], (status, body[:300])

    # another model: its own connection (conn_id) is used
    status, _, body = get(url(af, OTHER, "r1", "pic.png"), **bearer)
    assert status == 200 and body == REPORT["pic.png"]


def test_without_a_valid_login_the_endpoint_refuses(stack):
    af = stack
    page = url(af, MODEL, RUN)
    status, _, body = get(page)
    assert status == 401, body
    assert json.loads(body)["detail"] == "Not authenticated"
    status, _, body = get(page, Authorization="Bearer not-a-jwt")
    assert status == 403 and json.loads(body)["detail"] == "Invalid JWT token", body
    status, _, body = get(page, Cookie="_token=not-a-jwt")
    assert status in (401, 403), body
    assert REPORT["index.html"] not in body
    # refused before the model is even looked up: no way to probe model names or runs
    status, _, _ = get(url(af, "no-such-model", "r"))
    assert status == 401
    # a browser without a session (an alert's link) is sent to Airflow's login page, which comes back
    status, headers, body = get(page, Accept="text/html,application/xhtml+xml,*/*;q=0.8")
    location = {k.lower(): v for k, v in headers.items()}.get("location", "")
    assert status == 302 and location.startswith("/auth/login?next="), (status, headers, body)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["next"] == [page]
    assert REPORT["index.html"] not in body


def test_a_browser_without_a_session_logs_in_and_lands_on_the_report(stack, chromium, tmp_path):
    """The on-call path from an alert: the report link opened in a browser with no Airflow session ->
    Airflow's login page -> Sign in -> the report itself (headless Debian chromium, Selenium)."""
    from selenium.webdriver.common.by import By

    from tests.e2e.browser import is_png, ui_session
    af = stack
    page = url(af, MODEL, RUN)
    with ui_session(chromium, af.url, tmp_path) as ui:
        try:
            ui.driver.get(page)
            ui.wait().until(lambda d: "/auth/login" in d.current_url, "not sent to the login page")
            shots = [ui.screenshot("01-login-page.png")]
            ui.visible(By.NAME, "username").send_keys(af.username)
            ui.visible(By.NAME, "password").send_keys(af.password)
            ui.clickable(By.XPATH, "//button[@type='submit'][normalize-space()='Sign in']").click()
            ui.wait().until(lambda d: urllib.parse.unquote(d.current_url) == urllib.parse.unquote(page),
                            "not sent back to the report after signing in")
            ui.visible(By.XPATH, "//h1[contains(., 'validation FAILED')]")
            shots.append(ui.screenshot("02-the-report.png"))
        except Exception:
            ui.dump("failure")
            raise
    assert all(is_png(s) for s in shots)


def test_bad_requests_get_clear_errors(stack):
    af = stack
    bearer = {"Authorization": f"Bearer {af.test_token}"}

    def detail(u: str, want: int) -> str:
        status, _, body = get(u, **bearer)
        assert status == want, (u, status, body[:500])
        return json.loads(body)["detail"]

    d = detail(url(af, MODEL, "manual__no-such-run"), 404)
    assert d == (f"no report file s3://{af.serving}/{MODEL}/_reports/manual__no-such-run/index.html: the run "
                 "'manual__no-such-run' has not written a report (yet), or it was removed"), d
    assert "no report file" in detail(url(af, MODEL, RUN, "missing.png"), 404)
    d = detail(url(af, "no-such-model", RUN), 404)
    assert d == "model 'no-such-model' is not in the release config: no reports for it"

    base = f"{af.url}/tfs-release/reports/{MODEL}"
    for u, what in [(f"{base}/{RUN}/gx/../../other/index.html", "'..'"),
                    (f"{base}/{RUN}/%2E%2E/x/index.html", "'..'"),
                    (f"{base}/../index.html", "run"),
                    (f"{base}/{RUN}/gx//index.html", "empty path segment"),
                    (f"{base}/{RUN}/a%5Cb.html", "backslash")]:
        d = detail(u, 400)
        assert d.startswith("refusing ") and what.strip("'") in d, (u, d)

    # the model's connection has wrong credentials: 502 naming the problem, never the secret
    d = detail(url(af, BROKEN, "r1"), 502)
    assert "credentials are wrong or lack permission" in d and af.conns["aws_bad"]["password"] not in d, d
    # the model's connection is not defined where the API server runs: 500 saying so
    d = detail(url(af, NO_CONN, "r1"), 500)
    assert d.startswith("release config: the Airflow connection 'aws_nowhere' of model 'no-conn' cannot be used "
                        "on the API server"), d


def test_the_validate_task_links_to_the_endpoint_by_default(stack):
    """The link the worker stores for the validate task (no report_base_url) is the endpoint URL,
    has no credential in it, and opens the report for a logged-in user."""
    af = stack
    report_uri = f"s3://{af.serving}/{MODEL}/_reports/{RUN}/index.html"
    env = services.airflow_env(af.home, int(af.url.rsplit(":", 1)[1]), config=af.config, conns=af.conns)
    python = os.path.join(services.airflow_venv(), "bin", "python")
    p = subprocess.run([python, PROBE, RELEASE, report_uri, f"release__{MODEL}"], env=env, cwd=af.home,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    probe = json.loads(p.stdout.strip().splitlines()[-1])
    assert probe["import_errors"] == {}
    out = probe["dags"][f"release__{MODEL}"]
    assert out["link"] == ["ReportLink", "Validation report", "_link_ReportLink", None, MODEL,
                           f"s3://{af.serving}/{MODEL}/_reports/"]
    assert out["serialized_links"] == {"Validation report": "_link_ReportLink"}
    assert out["url"] == (f"{af.url}/tfs-release/reports/{MODEL}/"
                          "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00-t1/index.html")
    assert "X-Amz-" not in out["url"] and af.secret not in p.stdout
    status, _, body = get(out["url"], Authorization=f"Bearer {af.test_token}")
    assert status == 200 and body == REPORT["index.html"]


# an attribute or a style that would fetch from another host (absolute or protocol-relative URL)
HTML_OUTSIDE = re.compile(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//"""
                          r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def test_a_real_report_is_served_inert_and_needs_nothing_from_outside(stack, tmp_path):
    """`tfs-release validate` (process launcher, the stand-in) writes a real report, great-expectations
    results included, into the model's `_reports/`; every file of it comes back through the endpoint
    with a CSP that runs no script and fetches nothing, and no page has a script or an outside URL."""
    import sys

    from registry.s3 import S3Uri, list_objects, make_client
    from tests.integration.validation import candidates
    af = stack
    golden = os.path.join(ROOT, "demo", "golden", MODEL)
    s3 = make_client(endpoint_url=af.conns["aws_default"]["extra"]["endpoint_url"],
                     aws_access_key_id=af.conns["aws_default"]["login"], aws_secret_access_key=af.secret,
                     region_name="us-east-1")
    cand = candidates.stage_candidate(s3, S3Uri(af.serving, f"{MODEL}/"),
                                      candidates.save(candidates.classifier_module(), str(tmp_path / "sm")),
                                      golden, str(tmp_path))
    config = tmp_path / "models.yaml"  # the stack's model, with the keys validation needs
    config.write_text(yaml.safe_dump({"models": {MODEL: {
        "task": "classification", "serving": f"s3://{af.serving}/{MODEL}/", "golden": golden,
        "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64]}}}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}, "PYTHONPATH": ROOT,
           "AWS_ENDPOINT_URL": af.conns["aws_default"]["extra"]["endpoint_url"], "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": af.conns["aws_default"]["login"], "AWS_SECRET_ACCESS_KEY": af.secret}
    p = subprocess.run([sys.executable, "-m", "cli", "validate", MODEL, "--candidate", cand, "--launcher", "process",
                        "--json", "--config", str(config)], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    run = json.loads(p.stdout)["run_id"]
    prefix = f"{MODEL}/_reports/{run}/"
    files = sorted(o["Key"][len(prefix):] for o in list_objects(s3, af.serving, prefix))
    assert {"index.html", "verdict.json", "gx/index.html", "gx/results.json"} <= set(files), files
    assert not [f for f in files if f.startswith("gx/") and f not in ("gx/index.html", "gx/results.json")], \
        f"no Data Docs assets (they come from CDNs): {files}"

    bearer = {"Authorization": f"Bearer {af.test_token}"}
    for rel in files:
        status, headers, body = get(url(af, MODEL, run, rel), **bearer)
        assert status == 200, (rel, body[:300])
        csp = [d.strip() for d in headers["content-security-policy"].split(";")]
        assert {"default-src 'none'", "img-src data:", "sandbox"} <= set(csp), (rel, csp)
        assert not [d for d in csp if d.startswith(("script-src", "connect-src", "frame-src"))], csp
        assert "sandbox" in csp and not [d for d in csp if d.startswith("sandbox ")], "a bare sandbox: no allow-*"
        assert headers["x-content-type-options"] == "nosniff"
        if rel.endswith(".html"):
            page = body.decode("utf-8")
            assert "<script" not in page.lower(), rel
            assert not HTML_OUTSIDE.search(page), (rel, HTML_OUTSIDE.search(page))
            for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page):
                assert ref.startswith(("data:", "#")) or not re.match(r"^[a-z][a-z0-9+.-]*:", ref), \
                    (rel, ref)  # pictures inline, links relative (through this endpoint)
    page = get(url(af, MODEL, run, "gx/index.html"), **bearer)[2].decode()
    assert "great-expectations results" in page and "expect_column_values_to_be_between" in page
