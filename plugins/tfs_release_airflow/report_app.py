"""Validation reports through Airflow's API server: an Airflow plugin that mounts a small FastAPI app.

    GET <[api] base_url>/tfs-release/reports/<model>/<run>/<path>     (path default index.html)

streams ``s3://<serving>/<model>/_reports/<run>/<path>`` (the model and its serving URI from the
release config, ``TFS_RELEASE_CONFIG``) with the model's Airflow connection (``conn_id``, default
``aws_default``). The browser never sees an S3 URL or a credential, and relative links inside a
report (``gx/index.html``, the great-expectations results page) resolve against this
endpoint, so they go through it too. This is what the validate task's "Validation report" extra link
opens when the model has no ``report_base_url`` (``report_link.py``).

Every file is served with ``REPORT_HEADERS``: a Content-Security-Policy that runs no script and
fetches nothing (``sandbox``; pictures are data: URIs, styles inline), ``nosniff``, no referrer.

Access: Airflow's own API authentication (``get_user``: ``Authorization: Bearer <JWT>``, else the
``_token`` cookie the UI sets at login, so clicking the extra link works) and authorization (the
auth manager's GET on task instances of the DAG ``release__<model>``). No token: 401, or for a
browser (``Accept: text/html``) a redirect to Airflow's login page, which comes back to the report;
an invalid token: 403 (Airflow's answers); not allowed on that DAG: 403.
Errors: a model not in the config, or no object under that key: 404; a run or path that is not a
plain relative key ('..', '.', '//', backslash, NUL): 400; object storage failing: 502; a
broken release config: 500.

The plugin module is imported by every Airflow process that loads plugins (scheduler, workers):
FastAPI and the API server's security module are imported only when the first request arrives.
"""
# no `from __future__ import annotations`: FastAPI reads the route functions' annotations at runtime,
# and their types are imported inside create_app (string annotations would not resolve there)
import logging
import mimetypes
import os
import sys
import threading
import time

from airflow.plugins_manager import AirflowPlugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (ROOT, os.path.join(ROOT, "plugins")):  # registry/ and tfs_release_airflow wherever it runs
    if _path not in sys.path:
        sys.path.append(_path)

from tfs_release_airflow.report_link import REPORTS_ROUTE, URL_PREFIX  # noqa: E402

log = logging.getLogger("tfs_release.report_app")
CHUNK = 256 * 1024
CLIENT_TTL_S = 300.0  # a connection's client is rebuilt after this (rotated credentials)
GENERIC_TYPES = {"", "binary/octet-stream", "application/octet-stream"}
# A report is written by a validation of a model nobody has vetted yet and served from Airflow's own
# origin: the browser must treat every file as an inert document. No script runs (sandbox, no
# script-src), nothing is fetched from anywhere (default-src 'none'; pictures are data: URIs, styles
# inline), no form posts, no <base> redirection, no framing by other sites, no type sniffing.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'self'; sandbox")
REPORT_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer", "Cache-Control": "private, max-age=60"}


class ReportNotFound(LookupError):
    """No such model in the config, or no report object under that key."""


def config_path() -> str:
    """The release config, as the DAG file resolves it."""
    return os.environ.get("TFS_RELEASE_CONFIG") or os.path.join(ROOT, "config", "models.yaml")


def report_key(model_name: str, run: str, path: str):
    """(model config, bucket, key) of a report file; raises ReportNotFound (model) or BadInput (key)."""
    from registry import config as config_mod
    from registry.errors import BadInput
    from registry.layout import REPORTS
    from registry.s3 import check_key
    cfg = config_mod.load(config_path(), strict=False)  # another model's bad entry must not hide these
    if model_name not in cfg.models:
        raise ReportNotFound(f"model {model_name!r} is not in the release config: no reports for it")
    model = cfg.models[model_name]
    if "/" in run:
        raise BadInput(f"refusing run {run!r}: a run id has no '/'")
    check_key(run, what="run")
    check_key(path, what="report path")
    return model, model.serving.bucket, f"{model.serving.prefix}{REPORTS}{run}/{path}"


class Clients:
    """One S3 client per Airflow connection, rebuilt every CLIENT_TTL_S (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[float, object]] = {}

    def get(self, conn_id: str):
        now = time.monotonic()
        with self._lock:
            hit = self._clients.get(conn_id)
            if hit and now - hit[0] < CLIENT_TTL_S:
                return hit[1]
        from tfs_release_airflow.connection import s3_settings
        client = s3_settings(conn_id).client()
        with self._lock:
            self._clients[conn_id] = (now, client)
        return client


def open_report(clients: Clients, model_name: str, run: str, path: str) -> tuple[object, dict]:
    """(streaming body, {content_type, length, uri}) of a report file."""
    import botocore.exceptions

    from registry.s3 import error_code, translate
    from registry.errors import ConfigError
    model, bucket, key = report_key(model_name, run, path)
    conn_id = model.extra.get("conn_id", "aws_default")
    try:
        client = clients.get(conn_id)
    except Exception as exc:  # noqa: BLE001 - e.g. the connection is not defined on the API server
        log.warning("report %s: connection %r unusable: %s", model_name, conn_id, exc)
        raise ConfigError(f"the Airflow connection {conn_id!r} of model {model_name!r} cannot be used on the "
                          f"API server ({type(exc).__name__}): define it there as for the workers") from None
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            raise ReportNotFound(f"no report file s3://{bucket}/{key}: the run {run!r} has not written a "
                                 f"report (yet), or it was removed") from None
        raise translate(exc, bucket=bucket, key=key) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket, key=key) from None
    ctype = (obj.get("ContentType") or "").strip()  # as uploaded (registry/transfer.py guesses it) ...
    if ctype.split(";")[0].strip().lower() in GENERIC_TYPES:  # ... else from the file name
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return obj["Body"], {"content_type": ctype, "length": obj.get("ContentLength"), "uri": f"s3://{bucket}/{key}"}


def create_app():
    """The FastAPI app mounted at URL_PREFIX (built on the API server's first request)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import RedirectResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from registry.errors import BadInput, ConfigError, StorageError

    app = FastAPI(title="tfs-release reports", docs_url=None, redoc_url=None, openapi_url=None)
    clients = Clients()

    @app.exception_handler(StarletteHTTPException)
    async def login_first(request: Request, exc: StarletteHTTPException):
        """A browser without a session (a link from an alert, a new window) goes to Airflow's login
        page, which sends it back here; an API client (no text/html in Accept) gets the 401."""
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            from urllib.parse import quote

            from airflow.api_fastapi.app import get_auth_manager
            raw = request.scope.get("raw_path")  # as requested: a run id's ':' and '+' stay escaped
            path = raw.decode("latin-1") if raw else quote(request.url.path)
            back = f"{request.url.scheme}://{request.url.netloc}{path}" + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(get_auth_manager().get_url_login(next_url=back), status_code=302)
        return await http_exception_handler(request, exc)

    def authorized(model: str, request: Request, user: GetUserDep) -> None:
        """Airflow's authentication (bearer header or the UI's ``_token`` cookie) and its DAG-level
        authorization: reading task instances of ``release__<model>``."""
        requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE, param_dag_id=f"release__{model}")(request, user)

    @app.get(REPORTS_ROUTE + "/{model}/{run}", dependencies=[Depends(authorized)])
    def run_folder(model: str, run: str):
        """``.../<run>`` -> ``.../<run>/`` so the report's relative links resolve under the run."""
        from urllib.parse import quote
        return RedirectResponse(f"{quote(run, safe='')}/", status_code=307)

    @app.get(REPORTS_ROUTE + "/{model}/{run}/{path:path}", dependencies=[Depends(authorized)])
    def report_file(model: str, run: str, path: str):
        t0 = time.monotonic()
        if path == "" or path.endswith("/"):
            path += "index.html"
        try:
            body, meta = open_report(clients, model, run, path)
        except ReportNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ConfigError as exc:  # the server's config, not the caller's request
            log.error("report %s/%s/%s: %s", model, run, path, exc)
            raise HTTPException(500, f"release config: {exc}") from None
        except StorageError as exc:
            log.warning("report %s/%s/%s: %s", model, run, path, exc)
            raise HTTPException(502, f"object storage: {exc}") from None
        except BadInput as exc:
            raise HTTPException(400, str(exc)) from None
        log.info("report %s (%s bytes, %s) opened in %.3fs", meta["uri"], meta["length"], meta["content_type"],
                 time.monotonic() - t0)

        def chunks():
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        headers = dict(REPORT_HEADERS)
        if meta["length"] is not None:
            headers["Content-Length"] = str(meta["length"])
        return StreamingResponse(chunks(), media_type=meta["content_type"], headers=headers)

    return app


class LazyApp:
    """An ASGI app that builds ``create_app()`` on its first request, so importing this plugin (every
    Airflow process does) costs no FastAPI or API-server imports."""

    def __init__(self, factory):
        self._factory, self._app, self._lock = factory, None, threading.Lock()

    async def __call__(self, scope, receive, send):
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._factory()
        await self._app(scope, receive, send)


class TfsReleaseReportsPlugin(AirflowPlugin):
    name = "tfs_release_reports"
    fastapi_apps = [{"name": "tfs-release reports", "app": LazyApp(create_app), "url_prefix": URL_PREFIX}]
