"""Production endpoints' credentials and TLS (tfs_api/endpoint_auth.py): from an Airflow
connection's fields, to the steps' environment and back, and the errors that say what to fix."""
import base64
import json

import pytest

from registry.errors import BadInput
from tfs_api.endpoint_auth import ENV, NONE, EndpointAuth

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_basic_auth_headers_ca_and_grpc_tls_round_trip_through_the_environment(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    a = EndpointAuth.from_connection(login="svc", password="s3cret", where="c",
                                     extra={"headers": {"X-Team": "ml"}, "ca_bundle": str(ca), "grpc_tls": "true"})
    headers = dict(a.headers)
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"svc:s3cret").decode()
    assert headers["X-Team"] == "ml" and a.ca_pem == PEM and a.grpc_tls
    assert a.grpc_metadata() == (("authorization", headers["Authorization"]), ("x-team", "ml"))
    back = EndpointAuth.from_env(a.env())
    assert back == a


def test_an_explicit_authorization_header_wins_over_login_and_nothing_means_none():
    a = EndpointAuth.from_connection(login="u", password="p", where="c",
                                     extra={"headers": json.dumps({"Authorization": "Bearer tok"})})
    assert dict(a.headers) == {"Authorization": "Bearer tok"} and a.ca_pem is None and not a.grpc_tls
    assert EndpointAuth.from_connection(login=None, password=None, extra={}, where="c") == NONE
    assert not NONE and NONE.env() == {} and EndpointAuth.from_env({}) == NONE


@pytest.mark.parametrize("extra,match", [
    ({"token": "x"}, r"unknown extra key\(s\) \['token'\]; known: headers, ca_bundle, grpc_tls"),
    ({"headers": "not json"}, r"extra headers must be a JSON object"),
    ({"ca_bundle": "/no/such/ca.pem"}, r"ca_bundle '/no/such/ca.pem' is neither PEM text nor a readable file"),
])
def test_bad_connection_fields_are_named(extra, match):
    with pytest.raises(BadInput, match=match):
        EndpointAuth.from_connection(login=None, password=None, extra=extra, where="conn tfs_production")


@pytest.mark.parametrize("raw,match", [
    ("{", r"TFS_RELEASE_PRODUCTION_AUTH is not valid JSON"),
    ('{"token": "x"}', r"must be a JSON object with headers, ca_pem, grpc_tls"),
    ('{"ca_pem": "not a pem"}', r"ca_pem must be PEM text"),
    ('{"grpc_tls": "yes"}', r"grpc_tls must be true or false"),
])
def test_a_bad_environment_value_is_named(raw, match):
    with pytest.raises(BadInput, match=match):
        EndpointAuth.from_env({ENV: raw})
