"""Credentials and TLS for production TF Serving endpoints (``production.conn_id``).

Production TF Serving often sits behind a proxy that wants a token, or serves REST over https and
gRPC over TLS with an internal CA. A model's ``production: {conn_id: tfs_production, ...}`` names an
Airflow connection (any type, e.g. ``http``) whose fields say how to reach its endpoints:

- ``login`` / ``password``: HTTP Basic auth (REST ``Authorization`` header; the same header as gRPC
  call metadata);
- extra ``headers``: more request headers, e.g. ``{"Authorization": "Bearer ..."}`` (REST headers,
  gRPC metadata with lower-cased names);
- extra ``ca_bundle``: the CA certificate(s) that signed the endpoints' certificates, PEM text or a
  file path on the Airflow side (https REST endpoints are checked against it; without it, against
  the system's CAs);
- extra ``grpc_tls``: true for gRPC over TLS (the same CA bundle).

The Airflow side resolves the connection (plugins/tfs_release_airflow/connection.py) and hands the
result to the steps that talk to production (``validate``: which version production serves;
``confirm``: status and smoke test) as the JSON variable ``TFS_RELEASE_PRODUCTION_AUTH``, and to the
rollout trigger as its (encrypted) kwargs. The CLI reads the same variable. Nothing here imports
Airflow; secrets never reach a log line or a record.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.request
from dataclasses import dataclass

from registry.errors import BadInput

ENV = "TFS_RELEASE_PRODUCTION_AUTH"
KEYS = ("headers", "ca_pem", "grpc_tls")


@dataclass(frozen=True)
class EndpointAuth:
    headers: tuple[tuple[str, str], ...] = ()
    ca_pem: str | None = None
    grpc_tls: bool = False

    def __bool__(self) -> bool:
        return bool(self.headers or self.ca_pem or self.grpc_tls)

    # -- where it comes from --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, *, where: str) -> "EndpointAuth":
        if not isinstance(d, dict) or set(d) - set(KEYS):
            raise BadInput(f"{where} must be a JSON object with {', '.join(KEYS)}, got keys "
                           f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
        headers = d.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) and k.strip()
                                                    for k, v in headers.items()):
            raise BadInput(f"{where}: headers must map header names to strings")
        ca = d.get("ca_pem")
        if ca is not None and (not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca):
            raise BadInput(f"{where}: ca_pem must be PEM text (-----BEGIN CERTIFICATE-----...)")
        if not isinstance(d.get("grpc_tls", False), bool):
            raise BadInput(f"{where}: grpc_tls must be true or false")
        return cls(tuple(sorted(headers.items())), ca, bool(d.get("grpc_tls", False)))

    @classmethod
    def from_env(cls, env: dict | None = None) -> "EndpointAuth":
        raw = (os.environ if env is None else env).get(ENV, "").strip()
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
        except ValueError:
            raise BadInput(f"{ENV} is not valid JSON: it must be {{\"headers\": {{...}}, \"ca_pem\": \"...\", "
                           "\"grpc_tls\": false}} (the release DAG sets it from production.conn_id)") from None
        return cls.from_dict(d, where=ENV)

    @classmethod
    def from_connection(cls, *, login: str | None, password: str | None, extra: dict | None,
                        where: str) -> "EndpointAuth":
        """From an Airflow connection's fields (given, not looked up: no Airflow here)."""
        extra = dict(extra or {})
        unknown = set(extra) - {"headers", "ca_bundle", "grpc_tls"}
        if unknown:
            raise BadInput(f"{where}: unknown extra key(s) {sorted(unknown)}; known: headers, ca_bundle, grpc_tls")
        headers = extra.get("headers") or {}
        if isinstance(headers, str):
            try:
                headers = json.loads(headers)
            except ValueError:
                raise BadInput(f"{where}: extra headers must be a JSON object") from None
        if not isinstance(headers, dict):
            raise BadInput(f"{where}: extra headers must be an object of header names to values")
        headers = {str(k): str(v) for k, v in headers.items()}
        if login or password:
            token = base64.b64encode(f"{login or ''}:{password or ''}".encode()).decode()
            headers.setdefault("Authorization", f"Basic {token}")
        ca = extra.get("ca_bundle")
        if ca and "BEGIN CERTIFICATE" not in ca:
            try:
                with open(ca, encoding="utf-8") as fh:
                    ca = fh.read()
            except OSError as exc:
                raise BadInput(f"{where}: ca_bundle {ca!r} is neither PEM text nor a readable file ({exc})") from None
        grpc_tls = extra.get("grpc_tls", False)
        if isinstance(grpc_tls, str):
            grpc_tls = grpc_tls.strip().lower() in ("1", "true", "yes")
        return cls.from_dict({"headers": headers, "ca_pem": ca or None, "grpc_tls": bool(grpc_tls)}, where=where)

    def as_dict(self) -> dict:
        return {"headers": dict(self.headers), "ca_pem": self.ca_pem, "grpc_tls": self.grpc_tls}

    def env(self) -> dict[str, str]:
        return {ENV: json.dumps(self.as_dict())} if self else {}

    # -- using it --------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else None

    def urlopen(self, url: str, *, data: bytes | None = None, method: str | None = None,
                headers: dict | None = None, timeout: float = 10.0):
        req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {}), **dict(self.headers)})
        ctx = self.ssl_context() if url.lower().startswith("https://") else None
        return urllib.request.urlopen(req, timeout=timeout, context=ctx)

    def grpc_channel(self, target: str, options: list | None = None):
        import grpc
        if self.grpc_tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem.encode() if self.ca_pem else None)
            return grpc.secure_channel(target, creds, options=options)
        return grpc.insecure_channel(target, options=options)

    def grpc_metadata(self) -> tuple[tuple[str, str], ...] | None:
        return tuple((k.lower(), v) for k, v in self.headers) or None


NONE = EndpointAuth()
