"""The main job, end to end, through the Airflow release DAGs (`airflow dags test`):

  a training job writes checkpoints -> DAG release__<model> (newest complete checkpoint -> Model
  Garden export -> validation in a temporary TF Serving -> publish the next version, Asset event)
  for the classifier (trained first) -> a second run finds nothing new and skips -> a broken checkpoint
  fails validation, publishes nothing and alerts (Slack webhook + e-mail, to local receivers) -> the
  segmenter and the detector are released side by side as their trainings end -> an earlier detector checkpoint,
  released on purpose, is blocked by the regression gate (worse than the published version) ->
  tfs-release sync fills a TF Serving model_base_path -> a production TF Serving (stand-in) on it
  confirms each model's newest version (tfs-release confirm) and the rollout records are printed.

Run by `make demo` (services started, .run/services.env sourced). Airflow's home (SQLite) is
.run/demo/airflow; the config the DAGs read is .run/demo/config/models.yaml (config/models.yaml
plus the serving image and the alert channels); the alerts land in .run/demo/alerts/.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import services  # noqa: E402
from demo import checkpoint_cache  # noqa: E402
from demo.alert_sinks import AlertSinks  # noqa: E402
from registry import config  # noqa: E402
from registry.s3 import make_client  # noqa: E402

KINDS = {"shapes-classifier": "classification", "shapes-segmenter": "segmentation",
         "shapes-detector": "detection"}


def _serving_image() -> str:
    """The real TF Serving image for the TensorFlow the exporter runs (serving/image.py)."""
    from serving.image import default_image
    try:
        import importlib.metadata as md
        return default_image(md.version("tensorflow"))
    except Exception:  # noqa: BLE001 - no TensorFlow metadata: the validator's own fallback
        return default_image(None)


SERVING_IMAGE = _serving_image()
DEMO = os.environ.get("TFS_RELEASE_DEMO_DIR") or os.path.join(ROOT, ".run", "demo")
BASE_PATH = os.path.join(DEMO, "model_base_path")
EMAIL_TO = "ml-oncall@example.com"


_held = threading.local()
_print = threading.Lock()


def say(msg: str) -> None:
    lines = getattr(_held, "lines", None)
    if lines is not None:
        lines.append(msg)
        return
    with _print:
        print(msg, flush=True)


@contextlib.contextmanager
def held_output():
    """This thread's say() lines are printed together when the block ends: two models' steps run
    side by side and each one's story stays in one piece."""
    _held.lines = []
    try:
        yield
    finally:
        lines, _held.lines = _held.lines, None
        with _print:
            print("\n".join(lines), flush=True)


def cli(*args, check=True) -> dict:
    """Run the tfs-release CLI as a user would; returns its --json output."""
    private, public, _ = services.signing_keys()  # sign like the DAGs; sync serves only what the key signed
    p = subprocess.run([sys.executable, "-m", "cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT, "TFS_RELEASE_SIGNING_KEY_FILE": private,
                            "TFS_RELEASE_TRUSTED_KEYS": public})
    if check and p.returncode not in (0, 1):
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"tfs-release {' '.join(args)} failed with exit {p.returncode}")
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    out["_exit"] = p.returncode
    return out


class DemoAirflow(services.AirflowCLI):
    """`airflow dags test` in the Airflow venv with a home under .run/demo/airflow (services.AirflowCLI);
    each run's task logs are written where the UI of `make airflow` reads them."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env["AIRFLOW_HOME"], env, log=os.path.join(env["AIRFLOW_HOME"], "dags-test.log"))

    def dags_test(self, dag_id: str, conf: dict) -> tuple[str, str, dict[str, str], float]:
        """Run the DAG once; returns (run id, run state, task states, seconds)."""
        try:
            r = super().dags_test(dag_id, conf, timeout=None)
        except services.DagsTestError as exc:
            sys.stderr.write(str(exc) + "\n")
            raise SystemExit(f"airflow dags test {dag_id} started no run; log: {self.log}") from None
        write_task_logs(os.path.join(self.home, "logs"), dag_id, r.run_id, r.process.stdout + r.process.stderr)
        return r.run_id, r.state, r.tasks, r.seconds


_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) \[(\w+)\s*\] (.*)$")


def _log_record(line: str) -> dict:
    """``2026-01-02T03:04:05.6Z [info     ] message ...`` -> {timestamp, level, event}; other lines
    (a step's own output, a traceback) -> {event}."""
    m = _LOG_LINE.match(line)
    if not m:
        return {"event": line}
    return {"timestamp": m.group(1), "level": m.group(2), "event": m.group(3).rstrip()}


def report_link(uri: str, model: str) -> str:
    """``s3://<serving>/<model>/_reports/<run>/index.html`` -> the report endpoint of ``make airflow``
    (plugins/tfs_release_airflow/report_app.py); the URI itself when it is not a report's."""
    head, sep, tail = uri.partition(f"/{model}/_reports/")
    if not (sep and head.startswith("s3://")):
        return uri
    run, _, path = tail.partition("/")
    return (f"http://127.0.0.1:{services.ui_port()}/tfs-release/reports/{quote(model, safe='')}/"
            f"{quote(run, safe='')}/{quote(path or 'index.html')}")


def write_task_logs(log_folder: str, dag_id: str, run_id: str, output: str) -> list[str]:
    """Each task's lines of an ``airflow dags test`` run, as the task log Airflow's UI reads
    (``[logging] log_filename_template``'s default path under the home's logs folder): ``dags test``
    runs tasks in its own process and writes no log files, so without this every demo task would
    show "Log file not found" in ``make airflow``. Returns the files written."""
    written, tries, current, lines = [], {}, None, []

    def flush():
        task, map_index = current
        tries[current] = tries.get(current, 0) + 1
        folder = os.path.join(log_folder, f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={task}",
                              *([f"map_index={map_index}"] if map_index >= 0 else []))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"attempt={tries[current]}.log")
        with open(path, "w") as fh:  # JSON lines, as task logs are: the UI shows levels and times
            fh.writelines(json.dumps(_log_record(ln)) + "\n" for ln in lines)
        written.append(path)

    for line in output.splitlines():
        start = _TASK_START.search(line)
        if start:
            if current is not None:
                flush()
            current, lines = (start.group(1), int(start.group(2))), [line]
            continue
        if current is not None:
            lines.append(line)
            if _TASK_END.search(line):
                flush()
                current, lines = None, []
    if current is not None:
        flush()
    return written


def demo_config(image: str | None) -> str:
    """config/models.yaml with absolute paths, the serving image and the alert channels."""
    with open(os.path.join(ROOT, "config", "models.yaml")) as fh:
        raw = yaml.safe_load(fh)
    for m in raw["models"].values():
        for key in ("golden", "params_override"):
            if m.get(key) and not m[key].startswith("s3://") and not os.path.isabs(m[key]):
                m[key] = os.path.join(ROOT, m[key])
        if image:
            m["serving_image"] = image
        m["alerts"] = {"slack_conn_id": "slack_alerts", "smtp_conn_id": "smtp_alerts", "email_to": [EMAIL_TO]}
        m["signing_conn_id"] = services.SIGNING_CONN_ID  # publish signs (the key in .run/signing/)
    path = os.path.join(DEMO, "config", "models.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("# generated by demo/run_demo.py from config/models.yaml\n")
        yaml.safe_dump(raw, fh, sort_keys=False)
    return path


def serving_setup() -> tuple[str, str | None]:
    """(launcher, image): the real tensorflow/serving image when the engine has or can pull it,
    else the locally built stand-in; the process launcher when no Docker engine runs."""
    import services
    try:
        services.ensure_docker()
    except RuntimeError as exc:
        say(f"   no Docker engine ({exc}): validating with the process launcher (the TF-Serving stand-in)")
        return "process", None
    import docker
    client = docker.from_env()
    try:
        client.images.get(SERVING_IMAGE)
        say(f"   serving image: {SERVING_IMAGE}")
        return "docker", SERVING_IMAGE
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(SERVING_IMAGE)
        return "docker", SERVING_IMAGE
    except Exception:  # noqa: BLE001 - no registry here: fall back to the stand-in
        say(f"   {SERVING_IMAGE} cannot be pulled here (no image registry reachable): building the "
            "TF-Serving stand-in image locally instead (standin/, several minutes the first time)")
    from standin.image import ensure_image
    image = ensure_image()
    say(f"   serving image: {image} (the TF-Serving stand-in)")
    return "docker", image


def upload_like_training(client, folder: str, bucket: str, prefix: str, announce=None) -> int:
    """What a training job does: ckpt files first, the state file last. Skips what is there.
    ``announce(checkpoint_uri)``, when given, runs once the checkpoint is complete: e.g. posting the
    Asset event to Airflow's REST API (demo/checkpoint_events.py) where an API server runs."""
    have = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}
    files = checkpoint_cache.checkpoint_files(folder)
    files.sort(key=lambda f: f == "checkpoint")
    n = 0
    for f in files:
        path = os.path.join(folder, f)
        if have.get(prefix + f) != os.path.getsize(path) or f == "checkpoint":
            client.upload_file(path, bucket, prefix + f)
            n += 1
    if announce is not None and n:
        from registry.checkpoints import parse_state_file
        with open(os.path.join(folder, "checkpoint")) as fh:
            latest, _ = parse_state_file(fh.read())
        announce(f"s3://{bucket}/{prefix}{latest}")
    return n


class Outcomes:
    """What the demo expects to see, what it saw, and the time each phase took."""

    def __init__(self):
        self.rows: list[dict] = []      # model, run, checkpoint, verdict, version, report
        self.missed: list[str] = []     # expected outcomes that did not happen
        self.phases: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - t0))

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.missed.append(what)
            say(f"   !! expected: {what}")
        return ok


class Training:
    """Trains (or takes from the cache) the demo models in the background while the serving image
    builds and the first releases run: one lane per list in ``lanes``, each lane one model after the
    other, the lanes side by side (the detector, the longest, in a lane of its own beside the
    classifier then the segmenter: on 2 cores the waits overlap instead of adding up). Training is
    seeded and deterministic whatever runs beside it. Output: .run/demo/training.log."""

    def __init__(self, lanes: list[list[str]]):
        self.lanes = lanes
        self.done = {k: threading.Event() for lane in lanes for k in lane}
        self.folder: dict[str, str] = {}
        self.error: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.log_path = os.path.join(DEMO, "training.log")

    def start(self) -> None:
        for i, lane in enumerate(self.lanes):
            threading.Thread(target=self._lane, args=(lane,), daemon=True, name=f"demo-training-{i}").start()

    def _lane(self, kinds: list[str]) -> None:
        with open(self.log_path, "a", buffering=1) as log:
            for kind in kinds:
                t0 = time.monotonic()
                try:
                    self.folder[kind] = checkpoint_cache.get(kind, log=log)
                except Exception as exc:  # noqa: BLE001 - reported by the model's row, the demo goes on
                    self.error[kind] = f"{type(exc).__name__}: {exc}"
                self.seconds[kind] = time.monotonic() - t0
                self.done[kind].set()

    def wait(self, kind: str) -> str | None:
        self.done[kind].wait()
        return self.folder.get(kind)


# the detector trains longest: its own lane, beside the classifier then the segmenter
TRAINING_LANES = [["classification", "segmentation"], ["detection"]]


def main() -> int:
    out = Outcomes()
    os.makedirs(DEMO, exist_ok=True)
    cfg = config.load(os.path.join(ROOT, "config", "models.yaml"))
    client = make_client()
    for b in {m.checkpoints.bucket for m in cfg.models.values()} | {m.serving.bucket for m in cfg.models.values()}:
        try:
            client.create_bucket(Bucket=b)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    training = Training(TRAINING_LANES)
    training.start()
    say(f"== demo models: trained in the background (or taken from the cache: {checkpoint_cache.cache_dir()}); "
        f"log {os.path.relpath(training.log_path, ROOT)}")
    say("== serving environment for validation")
    with out.phase("serving image (stand-in build when not cached)"):
        launcher, image = serving_setup()
    cfg_path = demo_config(image)
    say(f"   the DAGs read {os.path.relpath(cfg_path, ROOT)} (config/models.yaml + serving image + alerts)")
    conn = services.aws_connection(dict(os.environ))
    home = os.path.join(DEMO, "airflow")
    os.makedirs(home, exist_ok=True)
    with AlertSinks(os.path.join(DEMO, "alerts")) as sinks:
        # `airflow dags test` serves nothing: the port only makes the links (the validate task's report
        # link, the alerts' report and run links) point at `make airflow`, where a user opens them next
        signing = services.signing_connection(services.signing_keys()[0])
        env = services.airflow_env(home, services.ui_port(), config=cfg_path,
                                   conns={"aws_default": conn, services.SIGNING_CONN_ID: signing})
        env.update(sinks.connection_env())
        af = DemoAirflow(env)
        say(f"== Airflow: migrating the metadata DB in {os.path.relpath(home, ROOT)} (SQLite)")
        with out.phase("airflow db migrate"):
            p = af.run("db", "migrate")
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-3000:])
            raise SystemExit(f"airflow db migrate failed; log: {af.log}")
        conf = {"launcher": launcher}
        # the classifier trains first: its release, a run with nothing new and a broken checkpoint run
        # while the segmenter and the detector still train; then those two side by side, each as its training ends
        first = "shapes-classifier"
        release_step(af, cfg, client, training, conf, out, first)
        skip_step(af, conf, out, first)  # both run whatever the release did, as before (each checks its own)
        broken_step(af, cfg, client, sinks, conf, out, first)
        later = [n for n in KINDS if n != first]
        say(f"== {' and '.join(later)}: each released as soon as its training ends, side by side (each one's "
            f"lines below once it is done; training log {os.path.relpath(training.log_path, ROOT)})")

        def steps(name: str) -> None:
            with held_output():
                if release_step(af, cfg, client, training, conf, out, name) and name == "shapes-detector":
                    regression_step(af, cfg, client, sinks, training, conf, out)

        first_phase, t0 = len(out.phases), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(later), thread_name_prefix="demo-release") as pool:
            for f in [pool.submit(steps, n) for n in later]:
                f.result()
        out.rows.sort(key=lambda r: list(KINDS).index(r["model"]))  # they arrived side by side; stable sort
        # the two models' phases overlap: the wall time first, then each model's own (indented)
        side = sorted(out.phases[first_phase:], key=lambda p: later.index(p[0].split(":")[0]))
        out.phases[first_phase:] = [(f"{' + '.join(later)} side by side (wall time)", time.monotonic() - t0)] + [
            ("  " + n, dt) for n, dt in side]

    kid = services.signing_keys()[2]
    say(f"== sync committed versions into {BASE_PATH} (what production TF Serving serves); the sidecar "
        f"serves only versions signed by key {kid[:12]} (.run/signing/)")
    with out.phase("sync into model_base_path"):
        for name in KINDS:
            r = cli("sync", name, "--dest", os.path.join(BASE_PATH, name), "--once", "--keep", "3")
            say(f"   {name}: local versions {r.get('versions')}, each signature verified")
            out.expect(bool(r.get("versions")), f"{name}: sync puts a version into {BASE_PATH}/{name}")
            out.expect(not r.get("failed"), f"{name}: every version the sync fetched is signed by the demo's key "
                                            f"({'; '.join(f['reason'] for f in r.get('failed') or [])})")
    production_step(out)
    say("== published versions")
    for name in KINDS:
        for v in cli("versions", name)["versions"]:
            signed = f"signed:{v['signed_by'][:12]}" if v.get("signed_by") else "UNSIGNED"
            say(f"   {name:18} v{v['version']:<3} step {v['step']}  {v['verdict']}  {signed}  {v['checkpoint']}")
            out.expect(v.get("signed_by") == kid, f"{name} v{v['version']} is signed by the demo's key")
    _table(out)
    say("== validation reports (open after `make airflow`, behind its login)")
    for r in out.rows:
        if r.get("report"):
            say(f"   {r['model']:18} {r['run']:24} {report_link(r['report'], r['model'])}")
    say("== what next\n"
        f"   make airflow   the Airflow UI on http://127.0.0.1:{services.ui_port()} (it prints the login) with these\n"
        "                  runs, their notes, task logs and each validate task's 'Validation report' link\n"
        f"   alerts         the failed run's e-mail and Slack message: {os.path.join(DEMO, 'alerts')}\n"
        f"   task logs      {home}/logs and {os.path.join(home, 'dags-test.log')}\n"
        "   make test      the test suite; README.md 'Where to go next' for the docs")
    if out.missed:
        say(f"Demo FAILED: {len(out.missed)} expected outcome(s) did not happen:")
        for what in out.missed:
            say(f"   - {what}")
        return 1
    say("Demo done: every expected outcome happened.")
    return 0


def production_step(out) -> None:
    """Production: one TF Serving (the stand-in, a process) on the synced model_base_path, serving the
    three models through a model config file (latest version of each). Each model's newest version
    is confirmed there (`tfs-release confirm`: AVAILABLE, then golden answers as in validation) and
    its rollout record printed."""
    from serving.launchers import ProcessLauncher
    text = "model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "/models/{n}" model_platform: "tensorflow" }}\n' for n in KINDS) + "}\n"
    say(f"== production: TF Serving (stand-in process) serving {BASE_PATH} for the three models; "
        "each newest version confirmed there")
    with out.phase("production: confirm rollouts"):
        server = ProcessLauncher().start(BASE_PATH, next(iter(KINDS)), config=text)
        try:
            url, grpc = f"http://{server.host}:{server.rest_port}", f"{server.host}:{server.grpc_port}"
            with open(os.path.join(DEMO, "config", "models.yaml")) as fh:  # demo_config(): absolute paths
                raw = yaml.safe_load(fh)
            for m in raw["models"].values():
                m["production"] = {"endpoints": [{"rest": url, "grpc": grpc}], "confirm_deadline_s": 180}
            path = os.path.join(DEMO, "config", "production.yaml")
            with open(path, "w") as fh:
                fh.write("# generated by demo/run_demo.py: the demo's models.yaml + its production endpoint\n")
                yaml.safe_dump(raw, fh, sort_keys=False)
            for name in KINDS:
                versions = [v["version"] for v in cli("versions", name)["versions"]]
                if not versions:
                    continue
                rec = cli("confirm", name, "--version", str(versions[-1]), "--poll", "0.5", "--config", path)
                ep = (rec.get("endpoints") or [{}])[0]
                say(f"   {name} v{versions[-1]}: {rec.get('outcome')} ({ep.get('endpoint')} {ep.get('state')} after "
                    f"{ep.get('seconds')}s; smoke: {(rec.get('smoke') or [{}])[0].get('detail')})\n"
                    f"      record {rec.get('record')}")
                out.expect(rec.get("outcome") == "confirmed",
                           f"{name} v{versions[-1]} is confirmed in production ({rec.get('reason')})")
        finally:
            server.stop()


def release_step(af, cfg, client, training, conf: dict, out, name: str) -> bool:
    """The model's training job writes its checkpoints (once its training is done); its release DAG
    runs and publishes the newest one. Returns whether it did (or the checkpoint already was)."""
    kind = KINDS[name]
    m = cfg.model(name)
    row = {"model": name, "run": "release", "checkpoint": "-", "verdict": "-", "version": "-", "report": None}
    out.rows.append(row)
    say(f"== {name}: the training job writes checkpoints to {m.checkpoints}")
    t0 = time.monotonic()
    folder = training.wait(kind)
    waited = time.monotonic() - t0
    out.phases.append((f"{name}: training (waited for it)", waited))
    if folder is None:
        row["verdict"] = "no model"
        out.expect(False, f"{name}: a trained model that passes its golden set ({training.error.get(kind)})")
        return False
    gate = _gate_summary(folder)
    say(f"   model ready ({'waited ' + format(waited, '.0f') + 's' if waited >= 1 else 'cached'}); "
        f"in-process golden check: {gate}")
    n = upload_like_training(client, folder, m.checkpoints.bucket, m.checkpoints.prefix)
    say(f"   {n} file(s) uploaded ({', '.join(checkpoint_cache.checkpoint_files(folder))})")
    with out.phase(f"{name}: release run"):
        run_id, state, tasks, dt = af.dags_test(f"release__{name}", conf)
    say(f"   airflow dags test release__{name}: {state} in {dt:.0f}s  ({_tasks(tasks)})")
    pub = af.xcom(f"release__{name}", run_id, "publish")
    ck = af.xcom(f"release__{name}", run_id, "newest_checkpoint") or {}
    verdict = af.xcom(f"release__{name}", run_id, "validate") or {}
    row.update(checkpoint=_short(ck.get("uri")), report=verdict.get("report"),
               verdict=_verdict(verdict, tasks))
    if pub:
        row["version"] = f"v{pub['version']} (new)"
        say(f"   published version {pub['version']} from {ck.get('uri')}")
    elif ck.get("published_as") is not None:
        row.update(version=f"v{ck['published_as']} (already)", verdict="skipped: nothing new")
        say(f"   nothing new: {ck['uri']} is already version {ck['published_as']}")
    return out.expect(state == "success" and (pub or ck.get("published_as") is not None),
                      f"release__{name} publishes its checkpoint (run {state}; task logs in {af.home}/logs, {af.log})")


def skip_step(af, conf: dict, out, name: str) -> None:
    """The release DAG runs again with no new checkpoint: it finds nothing new and skips."""
    say(f"== {name}: the DAG runs again with no new checkpoint")
    with out.phase(f"{name}: run with nothing new"):
        run_id, state, tasks, dt = af.dags_test(f"release__{name}", conf)
    say(f"   {state} in {dt:.0f}s  ({_tasks(tasks)})")
    ck = af.xcom(f"release__{name}", run_id, "newest_checkpoint") or {}
    out.rows.append({"model": name, "run": "again, nothing new", "checkpoint": _short(ck.get("uri")),
                     "verdict": "skipped" if tasks.get("export") == "skipped" else _verdict({}, tasks),
                     "version": f"v{ck.get('published_as')}", "report": None})
    out.expect(state == "success" and tasks.get("export") == "skipped",
               f"the second release__{name} run skips (state {state}, export {tasks.get('export')})")


def broken_step(af, cfg, client, sinks, conf: dict, out, name: str) -> None:
    """A broken checkpoint (random weights) arrives: validation fails, nothing is published, the
    e-mail and Slack alerts arrive with the reason."""
    m = cfg.model(name)
    versions_before = [v["version"] for v in cli("versions", name)["versions"]]
    step = max(c["step"] for c in cli("checkpoints", name)["checkpoints"] if c["step"] is not None) + 1
    say(f"== {name}: a broken checkpoint arrives (ckpt-{step}: random weights, e.g. a bad restart)")
    with out.phase(f"{name}: broken checkpoint run + alerts"):
        tmp = os.path.join(DEMO, "broken")
        subprocess.run([sys.executable, os.path.join(ROOT, "demo", "broken_checkpoint.py"), "--kind",
                        "classification", "--out", tmp, "--step", str(step)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
        for f in os.listdir(tmp):
            if f.startswith(f"ckpt-{step}."):
                client.upload_file(os.path.join(tmp, f), m.checkpoints.bucket, m.checkpoints.prefix + f)
        client.put_object(Bucket=m.checkpoints.bucket, Key=m.checkpoints.prefix + "checkpoint",
                          Body=f'model_checkpoint_path: "ckpt-{step}"\n'.encode())
        n_mail, n_hook = len(sinks.mails), len(sinks.webhooks)
        run_id, state, tasks, dt = af.dags_test(f"release__{name}", conf)
        say(f"   {state} in {dt:.0f}s  ({_tasks(tasks)})")
        verdict = af.xcom(f"release__{name}", run_id, "validate", key="verdict") or {}
        failed = [c for c in verdict.get("checks", []) if not c.get("passed", True)]
        say(f"   why: {len(failed)} failed check(s), e.g.")
        for c in failed[:3]:
            say(f"      {c.get('name')}: {c.get('detail')}")
        after = [v["version"] for v in cli("versions", name)["versions"]]
        say(f"   versions before {versions_before}, after {after}: "
            + ("nothing was published" if after == versions_before else "SOMETHING WAS PUBLISHED"))
        arrived = sinks.wait(mails=n_mail + 1, webhooks=n_hook + 1, timeout=60)
    out.rows.append({"model": name, "run": f"broken ckpt-{step}", "checkpoint": f"ckpt-{step}",
                     "verdict": "FAILED" if verdict and not verdict.get("passed", True) else _verdict(verdict, tasks),
                     "version": "none (nothing published)" if after == versions_before else f"{after}",
                     "report": verdict.get("report")})
    out.expect(state == "failed" and bool(verdict) and not verdict.get("passed", True),
               f"the broken checkpoint fails validation (run {state}, verdict passed={verdict.get('passed')})")
    out.expect(after == versions_before, f"nothing published from the broken checkpoint (versions {after})")
    say("== alerts" + ("" if arrived else " (not all arrived within 60 s!)"))
    out.expect(arrived, "the failed run's e-mail and Slack alerts arrive")
    for mail in sinks.mails[n_mail:]:
        say(f"   e-mail to {', '.join(mail.rcpt_tos)}: {mail.subject!r}\n      {mail.path}")
    for hook in sinks.webhooks[n_hook:]:
        first = (hook.payload.get("text") or "").splitlines()[:1]
        say(f"   Slack webhook POST {hook.path.split('/services/')[0] or '/services/...'}: "
            f"{first[0] if first else hook.payload}\n      {hook.file}")


def regression_step(af, cfg, client, sinks, training, conf: dict, out) -> None:
    """An earlier, under-trained checkpoint of the detector, released on purpose (the `checkpoint`
    param) after the final one: the regression gate blocks it against the published version, even
    though it passes the absolute golden checks; nothing is published, the alerts say why. Which
    checkpoint: the latest earlier one that passes its golden set in process with a gated metric
    clearly below the final's (found when the training was checked: demo/golden_gate.py
    regression_candidate)."""
    name = "shapes-detector"
    cks = {c["step"]: c for c in cli("checkpoints", name)["checkpoints"] if c.get("step") and c.get("complete", True)}
    versions_before = [v["version"] for v in cli("versions", name)["versions"]]
    with open(os.path.join(training.folder["detection"], checkpoint_cache.GATE_FILE)) as fh:
        scan = json.load(fh).get("regression_scan") or {}
    cand = scan.get("candidate") or {}
    if cand.get("step") not in cks or not versions_before:
        out.expect(False, f"{name}: a published version and an earlier checkpoint that only the regression gate "
                          f"blocks (in-process scan: {scan.get('scanned')})")
        return
    final, earlier = max(cks), cks[cand["step"]]
    say(f"== {name}: someone releases an earlier checkpoint ({_short(earlier['uri'])}, step {earlier['step']} of "
        f"{final}) with the `checkpoint` param; production serves v{versions_before[-1]}")
    say(f"   in process ckpt-{earlier['step']} passes every golden image; "
        + ", ".join(f"{k} {v:.3f} below the final's" for k, v in cand["drops"].items()))
    with out.phase(f"{name}: earlier checkpoint vs production (regression gate)"):
        n_mail, n_hook = (len(x) for x in sinks.about(name))  # the segmenter's run may alert meanwhile
        run_id, state, tasks, dt = af.dags_test(f"release__{name}", {**conf, "checkpoint": earlier["uri"]})
        say(f"   {state} in {dt:.0f}s  ({_tasks(tasks)})")
        verdict = af.xcom(f"release__{name}", run_id, "validate", key="verdict") or {}
        gate = verdict.get("regression") or {}
        other = [c for c in verdict.get("checks", []) if not c.get("passed", True)
                 and not c.get("name", "").startswith(("regression:", "compatibility:"))]
        say(f"   regression gate vs v{(gate.get('baseline') or {}).get('version')}: {gate.get('summary')}")
        for row in gate.get("metrics", []):
            say(f"      {row['name']:10} v{(gate.get('baseline') or {}).get('version')} {row['baseline']:.3f}  "
                f"candidate {row['candidate']:.3f}  ({row['delta']:+.3f}){'  REGRESSED' if row.get('regressed') else ''}")
        say("   the absolute checks (golden images, floors, parity): "
            + ("all passed: only the comparison with production blocks it" if not other else
               f"{len(other)} failed too, e.g. {other[0].get('name')}: {other[0].get('detail')}"))
        after = [v["version"] for v in cli("versions", name)["versions"]]
        arrived = sinks.wait(mails=n_mail + 1, webhooks=n_hook + 1, timeout=60, about=name)
    out.rows.append({"model": name, "run": f"earlier ckpt-{earlier['step']} (param)",
                     "checkpoint": _short(earlier["uri"]),
                     "verdict": "BLOCKED by the regression gate" if gate.get("status") == "blocked" else
                     _verdict(verdict, tasks), "version": "none (nothing published)" if after == versions_before
                     else f"{after}", "report": verdict.get("report")})
    out.expect(state == "failed" and gate.get("status") == "blocked",
               f"the regression gate blocks {name} ckpt-{earlier['step']} (run {state}, gate {gate.get('status')})")
    out.expect(after == versions_before, f"nothing published from the earlier checkpoint (versions {after})")
    out.expect(arrived, "the blocked run's e-mail and Slack alerts arrive")
    for hook in sinks.about(name)[1][n_hook:]:
        first = (hook.payload.get("text") or "").splitlines()[:1]
        say(f"   Slack: {first[0] if first else hook.payload}\n      {hook.file}")


def _gate_summary(folder: str) -> str:
    try:
        with open(os.path.join(folder, checkpoint_cache.GATE_FILE)) as fh:
            g = json.load(fh)
    except (OSError, ValueError):
        return "(not recorded)"
    w = g.get("worst") or {}
    return (f"{len(g.get('images', {}))} golden images pass, seed {g.get('seed', '?')}, worst margin "
            f"{w.get('margin', float('nan')):+.3f} ({w.get('image')})")


def _short(uri: str | None) -> str:
    return uri.rsplit("/", 1)[-1] if uri else "-"


def _verdict(verdict: dict, tasks: dict) -> str:
    if verdict:
        return "PASSED" if verdict.get("passed") else "FAILED"
    return tasks.get("validate", "-")


def _table(out: Outcomes) -> None:
    say("== summary")
    cols = ("model", "run", "checkpoint", "verdict", "version")
    rows = [[str(r.get(c) or "-") for c in cols] + [r.get("report") or "-"] for r in out.rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    say("   " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)) + "  report")
    for r in rows:
        say("   " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    setup = os.environ.get("TFS_DEMO_SETUP_SECONDS")
    say("== time per phase" + ("" if setup else " (this script; make demo prints its setup time too)"))
    if setup:
        say(f"   {'setup: system packages, venvs, SeaweedFS, Docker engine':58} {float(setup):6.0f}s")
    for name, dt in out.phases:
        say(f"   {name:58} {dt:6.0f}s")


def _tasks(tasks: dict[str, str]) -> str:
    order = ["newest_checkpoint", "is_new", "export", "validate", "publish", "clean_staging"]
    return ", ".join(f"{t} {tasks[t]}" for t in order if t in tasks)


if __name__ == "__main__":
    sys.exit(main())
