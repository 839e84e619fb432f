"""TF Serving's model config file in the stand-in (``--model_config_file``), against real stand-in
processes on 127.0.0.1 and tiny real SavedModels: several models, ``specific``/``latest``/``all``
version policies, version labels over REST and gRPC, config reloads (file polling and
HandleReloadConfigRequest), TF Serving's label rules, and bad configs.

One server (``env``) is started like the tensorflow/serving image with a config file: its
--model_name/--model_base_path are ignored. Its tests run in file order, each rewriting the config
file (atomically, as a deployment should) and building on the previous one."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from tests.conftest import ROOT

from .support import MODEL, GrpcClient, StandinProcess, copy_version, get, post

TOL = 1e-6
OTHER = "other"
LOAD_LINE = re.compile(r"Successfully loaded servable version \{name: (\S+) version: (\d+)\} in (\d+\.\d{3}) s")


def model(name: str, base: str, policy: str = "", labels: dict | None = None) -> str:
    lab = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {policy}{lab} }}'


def specific(*versions) -> str:
    return "model_version_policy { specific { " + " ".join(f"versions: {v}" for v in versions) + " } }"


def config_text(*models) -> str:
    return "model_config_list { " + " ".join(models) + " }"


def write(path: str, text: str) -> None:
    """Replace the config file atomically (write aside, rename)."""
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def wait_for(what, predicate, server, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert server.proc.poll() is None, server.log()
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s\n{server.log()}")


def apply(server, text: str, *, refused: str | None = None) -> None:
    """Rewrite the config file and wait until the server has reloaded it (or logged `refused`)."""
    log = server.log()
    done, failed = log.count("Finished reloading config"), log.count(refused) if refused else 0
    write(server.config, text)
    if refused:
        wait_for(f"refusal {refused!r}", lambda: server.log().count(refused) > failed, server)
    else:
        wait_for("config reload", lambda: server.log().count("Finished reloading config") > done, server)
    assert "Traceback" not in server.log(), server.log()


def states(server, name: str = MODEL) -> dict[int, str]:
    code, body = get(f"{server.rest}/v1/models/{name}")
    assert code == 200, body
    return {int(s["version"]): s["state"] for s in body["model_version_status"]}


def predict(server, images, suffix: str = "", name: str = MODEL):
    return post(f"{server.rest}/v1/models/{name}{suffix}:predict", {"inputs": images.tolist()})


def mean_of(server, images, suffix: str = "", name: str = MODEL) -> np.ndarray:
    code, body = predict(server, images, suffix, name)
    assert code == 200, (suffix, body)
    return np.asarray(body["outputs"]["mean"])


def grpc_error(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module")
def refs(images, reference):
    """Expected "mean" answers of the two model variants (v1: scale 1, v2: scale 2)."""
    out = {k: reference(k, "serving_default", images=images)["mean"] for k in ("v1", "v2")}
    assert not np.allclose(out["v1"], out["v2"])  # the versions answer differently
    return out


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    """tiny: versions 1 (v1), 2 (v2), 3 (v1); other: version 1 (v2). Config: tiny specific {1, 2}, other latest."""
    root = tmp_path_factory.mktemp("model-config")
    tiny, other = root / MODEL, root / OTHER
    tiny.mkdir()
    other.mkdir()
    for version, key in ((1, "v1"), (2, "v2"), (3, "v1")):
        copy_version(tiny_models[key], str(tiny), version)
    copy_version(tiny_models["v2"], str(other), 1)
    config = str(root / "models.config")
    write(config, config_text(model(MODEL, tiny, specific(1, 2)), model(OTHER, other)))
    # like the tensorflow/serving image: --model_name/--model_base_path are always passed, and ignored
    s = StandinProcess(str(root / "not-there"), str(root / "standin.log"), model_name="ignored",
                       extra=[f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                              "--file_system_poll_wait_seconds=1"])
    s.config, s.tiny, s.other, s.root = config, str(tiny), str(other), root
    try:
        s.startup_seconds = s.wait_available(timeout=120)
        print(f"stand-in with a model config file: startup to AVAILABLE {s.startup_seconds:.2f} s")
        s.grpc = GrpcClient(s.grpc_port)
        yield s
    finally:
        s.stop()


def test_two_models_and_two_specific_versions(env, images, refs):
    env.wait_state(1, "AVAILABLE")
    env.wait_state(2, "AVAILABLE")
    env.wait_available(1, model=OTHER)
    assert states(env) == {2: "AVAILABLE", 1: "AVAILABLE"}  # 3 is on disk but not in the policy
    assert states(env, OTHER) == {1: "AVAILABLE"}
    log = env.log()
    assert "--model_name/--model_base_path are ignored" in log and "not-there" not in log
    # each AVAILABLE version answers through /versions/N; no version: the highest AVAILABLE one
    np.testing.assert_allclose(mean_of(env, images, "/versions/1"), refs["v1"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mean_of(env, images, "/versions/2"), refs["v2"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mean_of(env, images), refs["v2"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mean_of(env, images, name=OTHER), refs["v2"], atol=TOL, rtol=0)
    code, body = predict(env, images, "/versions/3")
    assert (code, body) == (404, {"error": "Servable not found for request: Specific(tiny, 3)"})
    code, body = get(f"{env.rest}/v1/models/{MODEL}/versions/3")
    assert (code, body) == (404, {"error": "Could not find version 3 of model tiny"})
    for version, key in ((1, "v1"), (2, "v2")):
        resp = env.grpc.predict({"images": images}, version=version)
        assert resp.model_spec.version.value == version
        np.testing.assert_allclose(np.asarray(resp.outputs["mean"].float_val), refs[key], atol=TOL, rtol=0)
    # per-version load times: one stable log line per loaded version
    loads = {(m, int(v)): float(t) for m, v, t in LOAD_LINE.findall(log)}
    assert set(loads) == {(MODEL, 1), (MODEL, 2), (OTHER, 1)} and all(0 < t < 60 for t in loads.values()), loads


def test_labels_added_by_a_config_reload(env, images, refs):
    apply(env, config_text(model(MODEL, env.tiny, specific(1, 2), {"stable": 1, "canary": 2}), model(OTHER, env.other)))
    np.testing.assert_allclose(mean_of(env, images, "/labels/stable"), refs["v1"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mean_of(env, images, "/labels/canary"), refs["v2"], atol=TOL, rtol=0)
    code, body = get(f"{env.rest}/v1/models/{MODEL}/labels/stable/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"
    code, body = get(f"{env.rest}/v1/models/{MODEL}/labels/canary")  # status: a label lists every version
    assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["2", "1"]
    resp = env.grpc.predict({"images": images}, label="canary")
    assert resp.model_spec.version.value == 2
    np.testing.assert_allclose(np.asarray(resp.outputs["mean"].float_val), refs["v2"], atol=TOL, rtol=0)
    assert env.grpc.metadata(label="stable").model_spec.version.value == 1
    # an unknown label: TF Serving's INVALID_ARGUMENT (REST 400)
    code, body = predict(env, images, "/labels/nope")
    assert (code, body) == (400, {"error": "Unrecognized servable version label: nope"})
    code, details = grpc_error(lambda: env.grpc.predict({"images": images}, label="nope"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "Unrecognized servable version label: nope"
    code, details = grpc_error(lambda: env.grpc.predict({"images": images}, name=OTHER, label="stable"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # labels belong to their model


def test_a_label_moves_only_to_an_available_version(env, images, refs):
    refusal = ("PollFilesystemAndReloadConfig failed to ReloadConfig: Request to assign label to version 3 of model "
               "tiny, which is not currently available for inference")
    # one config that both adds version 3 and points a label at it is refused as a whole
    apply(env, config_text(model(MODEL, env.tiny, specific(1, 2, 3), {"stable": 3, "canary": 2}),
                           model(OTHER, env.other)), refused=refusal)
    time.sleep(2.5)  # two more polls: still refused, nothing loaded
    assert 3 not in states(env)
    np.testing.assert_allclose(mean_of(env, images, "/labels/stable"), refs["v1"], atol=TOL, rtol=0)
    # TF Serving's way: first load version 3, then move the label (and drop version 1)
    apply(env, config_text(model(MODEL, env.tiny, specific(1, 2, 3), {"stable": 1, "canary": 2}),
                           model(OTHER, env.other)))
    env.wait_state(3, "AVAILABLE")
    apply(env, config_text(model(MODEL, env.tiny, specific(2, 3), {"stable": 3, "canary": 2}),
                           model(OTHER, env.other)))
    assert env.grpc.predict({"images": images}, label="stable").model_spec.version.value == 3
    env.wait_state(1, "END")
    assert states(env) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "END"}
    np.testing.assert_allclose(mean_of(env, images, "/labels/canary"), refs["v2"], atol=TOL, rtol=0)


def test_latest_two_versions(env, tiny_models, images, refs):
    copy_version(tiny_models["v2"], env.tiny, 4)
    time.sleep(1.5)
    assert 4 not in states(env)  # not in the specific policy
    apply(env, config_text(model(MODEL, env.tiny, "model_version_policy { latest { num_versions: 2 } }"),
                           model(OTHER, env.other)))
    env.wait_state(4, "AVAILABLE")
    env.wait_state(2, "END")
    assert states(env) == {4: "AVAILABLE", 3: "AVAILABLE", 2: "END", 1: "END"}
    np.testing.assert_allclose(mean_of(env, images), refs["v2"], atol=TOL, rtol=0)  # latest: 4
    np.testing.assert_allclose(mean_of(env, images, "/versions/3"), refs["v1"], atol=TOL, rtol=0)
    code, body = predict(env, images, "/labels/stable")  # the new config has no labels
    assert (code, body) == (400, {"error": "Unrecognized servable version label: stable"})


def test_all_versions_and_a_model_swapped(env, images, refs):
    """policy `all` reloads the unloaded versions; `other` leaves the config and `third` joins it."""
    apply(env, config_text(model(MODEL, env.tiny, "model_version_policy { all { } }"), model("third", env.other)))
    # a reload returns once each new model has a version AVAILABLE
    assert states(env, "third") == {1: "AVAILABLE"}
    env.wait_state(1, "END", model=OTHER)
    for version in (1, 2):
        env.wait_state(version, "AVAILABLE")
    assert states(env) == {4: "AVAILABLE", 3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}
    np.testing.assert_allclose(mean_of(env, images, "/versions/1"), refs["v1"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mean_of(env, images, name="third"), refs["v2"], atol=TOL, rtol=0)
    code, body = predict(env, images, name=OTHER)
    assert (code, body) == (404, {"error": "Servable not found for request: Latest(other)"})
    assert states(env, OTHER) == {1: "END"}  # its states stay visible, as in TF Serving's monitor


@pytest.mark.parametrize("text,message", [
    ("model_config_list { config { nmae: 'x' } }",
     "Failed to read ModelServerConfig file: Invalid protobuf file: '{config}'"),
    (config_text(model(MODEL, "tiny")), "PollFilesystemAndReloadConfig failed to ReloadConfig: Expected model tiny to "
                                        "have an absolute path or URI; got base_path()=tiny"),
    (config_text(model(MODEL, "/a"), model(MODEL, "/b")),
     "PollFilesystemAndReloadConfig failed to ReloadConfig: Illegal to list model tiny multiple times in config list"),
    ("", "PollFilesystemAndReloadConfig failed to ReloadConfig: Cannot transition to requested config. It is only "
         "legal to transition from one ModelConfigList to another."),
])
def test_an_invalid_rewrite_keeps_the_running_config(env, images, refs, text, message):
    apply(env, text, refused=message.format(config=env.config))
    assert states(env) == {4: "AVAILABLE", 3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}
    np.testing.assert_allclose(mean_of(env, images, "/versions/1"), refs["v1"], atol=TOL, rtol=0)
    assert states(env, "third") == {1: "AVAILABLE"}


def test_reload_config_rpc(env):
    code, details = grpc_error(lambda: env.grpc.reload_config(config_text(
        model(MODEL, env.tiny, "model_version_policy { all { } }", {"stable": 9}))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details == (
        "Request to assign label to version 9 of model tiny, which is not currently available for inference")
    code, details = grpc_error(lambda: env.grpc.reload_config('custom_model_config { type_url: "x" }'))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Only ModelConfigList is currently supported" in details
    resp = env.grpc.reload_config(config_text(model(MODEL, env.tiny, "model_version_policy { all { } }"),
                                              model("third", env.other)))
    assert resp.status.error_code == 0
    assert "Traceback" not in env.log()


def test_stops_on_sigterm(env):
    env.grpc.close()
    assert env.stop() < 5 and env.proc.returncode == 0, env.log()


# ----------------------------------------------------------------------- labels at startup
def test_labels_at_startup_need_the_flag(tiny_models, tmp_path, images, refs):
    """--allow_version_labels_for_unavailable_models: labels given with the versions at startup;
    a label already pointing somewhere still moves only to an AVAILABLE version."""
    tiny = tmp_path / MODEL
    tiny.mkdir()
    for version, key in ((1, "v1"), (2, "v2"), (3, "v1")):
        copy_version(tiny_models[key], str(tiny), version)
    config = str(tmp_path / "models.config")
    write(config, config_text(model(MODEL, tiny, specific(1, 2), {"stable": 1, "canary": 2, "future": 7})))
    s = StandinProcess(None, str(tmp_path / "standin.log"), model_name=None,
                       extra=[f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true"])
    c = None
    try:
        s.wait_available()
        s.wait_state(1, "AVAILABLE")
        s.wait_state(2, "AVAILABLE")
        c = GrpcClient(s.grpc_port)
        np.testing.assert_allclose(mean_of(s, images, "/labels/stable"), refs["v1"], atol=TOL, rtol=0)
        np.testing.assert_allclose(mean_of(s, images, "/labels/canary"), refs["v2"], atol=TOL, rtol=0)
        code, body = predict(s, images, "/labels/future")  # a label may name a version never loaded
        assert (code, body) == (404, {"error": "Servable not found for request: Specific(tiny, 7)"})
        # moving an assigned label to a version that is not AVAILABLE: refused even with the flag
        code, details = grpc_error(lambda: c.reload_config(config_text(
            model(MODEL, tiny, specific(1, 2, 3), {"stable": 3, "canary": 2}))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "version 3 of model tiny" in details
        # a new label may point at it (config file not polled here: the RPC's config stays)
        resp = c.reload_config(config_text(model(MODEL, tiny, specific(1, 2, 3),
                                                 {"stable": 1, "canary": 2, "next": 3})))
        assert resp.status.error_code == 0
        s.wait_state(3, "AVAILABLE")
        assert c.predict({"images": images}, label="next").model_spec.version.value == 3
        np.testing.assert_allclose(mean_of(s, images, "/labels/stable"), refs["v1"], atol=TOL, rtol=0)
    finally:
        if c is not None:
            c.close()
        s.stop()


# ------------------------------------------------------------------------- startup errors
@pytest.mark.parametrize("text,error", [
    ("model_config_list { config { name: 'tiny' base_path: '/m/tiny' model_platform: 'tensorflow' } ",
     "INVALID_ARGUMENT: Invalid protobuf file: '{config}'"),
    (None, "NOT_FOUND: {config}; No such file or directory"),
    (config_text(model(MODEL, "/m/tiny", specific(1), {"stable": 1})),
     "FAILED_PRECONDITION: Request to assign label to version 1 of model tiny, which is not currently available "
     "for inference"),
    (config_text(model(MODEL, "/m/tiny"), model(MODEL, "/m/tiny")),
     "INVALID_ARGUMENT: Illegal to list model tiny multiple times in config list"),
])
def test_a_bad_config_file_stops_the_start(tmp_path, text, error):
    config = str(tmp_path / "models.config")
    if text is not None:
        write(config, text)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "standin.server", "--host=127.0.0.1", "--port=0",
                           f"--model_config_file={config}"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 255, proc.stdout + proc.stderr
    assert f"Failed to start server. Error: {error.format(config=config)}" in proc.stdout.splitlines(), proc.stdout
    if text and text.startswith("model_config_list { config { name: 'tiny'"):
        assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:" in proc.stderr
    assert "TensorFlow" not in proc.stderr and took < 30  # refused before the TensorFlow import


def test_starts_with_no_model_then_loads_what_the_file_adds(tiny_models, tmp_path, images, refs):
    """An empty config (no models yet) opens the ports at once; a model written into the file later
    is loaded at the next poll."""
    tiny = tmp_path / MODEL
    tiny.mkdir()
    copy_version(tiny_models["v1"], str(tiny), 5)
    config = str(tmp_path / "models.config")
    write(config, "model_config_list { }")
    s = StandinProcess(None, str(tmp_path / "standin.log"), model_name=None,
                       extra=[f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    try:
        wait_for("ports open", lambda: "Exporting HTTP/REST API" in s.log(), s, timeout=120)
        code, body = get(f"{s.rest}/v1/models/{MODEL}")
        assert (code, body) == (404, {"error": "Could not find any versions of model tiny"})
        t0 = time.monotonic()
        write(config, config_text(model(MODEL, tiny)))
        s.wait_available(5, timeout=60)
        print(f"model added by a config rewrite AVAILABLE {time.monotonic() - t0:.2f} s after the rewrite")
        np.testing.assert_allclose(mean_of(s, images), refs["v1"], atol=TOL, rtol=0)
        assert LOAD_LINE.search(s.log()).group(1, 2) == (MODEL, "5")
    finally:
        s.stop()
