"""tfs-release: every step of the release pipeline without Airflow.

Exit codes: 0 success, 1 a check said no (validation verdict, verify found corruption),
2 bad input or configuration. Errors are one line on stderr; ``--json`` prints one JSON object on
stdout, logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from registry.errors import BadInput, ReleaseError

log = logging.getLogger("tfs-release")
# the sync sidecar's seconds between rounds: a new version waits half of it on average, and an
# unchanged bucket costs a few requests per round (TF Serving itself, on an s3:// base path, lists
# every second)
SYNC_INTERVAL_S = 2.0
DEFAULT_RECONCILE_S = 86400.0  # = registry/index.py's (not imported here: --help needs no boto3)
DEFAULT_SWEEP_S, DEFAULT_DEBOUNCE_S = 300.0, 1.0  # = registry/checkpoint_relay.py's (same reason)


def _common() -> argparse.ArgumentParser:
    """--config/--json/-v, accepted before and after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="models config (default: config/models.yaml)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--result", default=argparse.SUPPRESS, metavar="FILE",
                   help="also write the JSON result object to FILE (step commands in DAG tasks)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="tfs-release", parents=[common], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name, help_):
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        func, needs = COMMANDS[name]
        p.set_defaults(func=func, needs=needs)
        return p

    def signing_key_arg(p):
        p.add_argument("--signing-key", metavar="FILE", help="the ECDSA private key (PEM) that signs what this "
                       "publishes (default: $TFS_RELEASE_SIGNING_KEY_FILE; `tfs-release keygen` makes one); "
                       "without one, versions are published unsigned")

    def trusted_key_arg(p, what):
        p.add_argument("--trusted-key", metavar="FILE", action="append", default=[],
                       help=f"a public key (PEM) trusted to sign versions; repeat for several (rotation). {what} "
                            "(default: the files in $TFS_RELEASE_TRUSTED_KEYS, ':'-separated)")

    p = cmd("checkpoints", "list checkpoints, mark the newest complete one")
    p.add_argument("model")

    p = cmd("export", "export the newest complete (or the given) checkpoint and stage it; prints the staging uri")
    p.add_argument("model")
    p.add_argument("--checkpoint", help="s3://.../ckpt-N (default: the newest complete one)")
    p.add_argument("--run-id")
    p.add_argument("--keep-dir", help="also keep a local copy of the SavedModel and reference answers here")

    p = cmd("validate", "validate a staged candidate in a temporary TF Serving; exit 1 on a failed verdict")
    p.add_argument("model")
    p.add_argument("--candidate", required=True, help="s3://.../_staging/<run>/")
    p.add_argument("--launcher", choices=["docker", "process"], default="docker")
    p.add_argument("--image", help="serving image for the docker launcher (default: config "
                                   "'serving_image', else tensorflow/serving)")
    p.add_argument("--deadline", type=float, help="seconds to wait for AVAILABLE (default 180)")
    p.add_argument("--report-dir", help="also keep the report here")
    p.add_argument("--accept-regression", metavar="REASON", default="",
                   help="pass although the regression gate (vs the version production serves) blocks it; "
                        "the reason is recorded in the verdict, the manifest and the alert")
    p.add_argument("--baseline", choices=["production", "newest_confirmed"], default="production",
                   help="what the regression gate compares with: what production serves (default; fails closed "
                        "when production cannot be observed) or the newest confirmed version")

    p = cmd("release", "all steps without Airflow: checkpoint -> export -> validate -> publish")
    p.add_argument("model")
    p.add_argument("--checkpoint", help="s3://.../ckpt-N (default: the newest complete one)")
    p.add_argument("--force", action="store_true", help="release even if this checkpoint is already published")
    p.add_argument("--dry-run", action="store_true", help="export and validate, but do not publish")
    p.add_argument("--launcher", choices=["docker", "process"], default="docker")
    p.add_argument("--image", help="serving image for the docker launcher")
    p.add_argument("--accept-regression", metavar="REASON", default="",
                   help="publish although the regression gate blocks it (recorded; --force does not do this)")
    p.add_argument("--approved-by", metavar="NAME",
                   help="who approved publishing (with --reason): needed when the model's config says approval: "
                        "required, or on_regression and the gate accepted a regression; recorded in the manifest. "
                        "rollback needs none: it republishes an earlier, already approved version (emergency path)")
    p.add_argument("--reason", metavar="TEXT", help="why it was approved (recorded as the approval's comment)")
    p.add_argument("--baseline", choices=["production", "newest_confirmed"], default="production",
                   help="what the regression gate compares with: what production serves (default; fails closed "
                        "when production cannot be observed) or the newest confirmed version")
    signing_key_arg(p)

    p = cmd("stage", "stage a local SavedModel folder as a candidate; prints its staging uri")
    p.add_argument("model")
    p.add_argument("--dir", required=True, help="folder containing saved_model.pb")
    p.add_argument("--run-id")

    p = cmd("publish", "publish a staged candidate as the next version; prints the version")
    p.add_argument("model")
    p.add_argument("--candidate", required=True, help="s3://.../_staging/<run>/")
    p.add_argument("--unvalidated", action="store_true",
                   help="publish although the candidate has no validation verdict")
    p.add_argument("--run-id")
    p.add_argument("--approved-by", metavar="NAME",
                   help="who approved publishing (with --reason): needed when the model's config says approval: "
                        "required, or on_regression and the candidate's verdict has an accepted regression; recorded "
                        "in the manifest. rollback needs none: it republishes an earlier, already approved version "
                        "(the emergency path)")
    p.add_argument("--reason", metavar="TEXT", help="why it was approved (recorded as the approval's comment)")
    signing_key_arg(p)

    p = cmd("versions", "list published versions with their lineage and signer (key id, not verified: see verify)")
    p.add_argument("model")

    p = cmd("verify", "check published versions against their manifests and signatures; report orphans")
    p.add_argument("model")
    p.add_argument("--deep", action="store_true", help="also re-hash every object (sha256)")
    p.add_argument("--grace", type=float, default=3600.0,
                   help="seconds a claim may stay uncommitted before it counts as an orphan")
    trusted_key_arg(p, "With keys, a version without a valid signature by one of them is a problem")

    p = cmd("clean-orphans", "remove orphans that verify reports (older than --grace seconds)")
    p.add_argument("model")
    p.add_argument("--grace", type=float, default=3600.0)

    p = cmd("clean-staging", "delete staged candidates (failed or dry runs) older than --older-than-days")
    p.add_argument("model")
    p.add_argument("--older-than-days", type=float, default=7.0)

    p = cmd("retention", "keep the K newest versions (never the newest, never a rollback target)")
    p.add_argument("model")
    p.add_argument("--keep", type=int, required=True)

    p = cmd("rollback", "production serves a good version again: rollout all publishes a copy of it as a new, "
                        "higher version; a canary model's stable label moves to it (and its canary is cleared)")
    p.add_argument("model")
    p.add_argument("--to", type=int, help="the version to serve again (default: the newest confirmed one below what "
                                          "production serves; name one to return to a never-confirmed version)")
    p.add_argument("--reason", help="why (recorded in the records, the labels' history and a copy's manifest)")
    p.add_argument("--by", help="who (recorded)")
    signing_key_arg(p)
    trusted_key_arg(p, "With a signing key, the version rolled back to must be signed by it or one of these")

    p = cmd("confirm", "wait until production serves version N and answers as in validation; roll back a "
                       "failed rollout; exit 1 unless confirmed")
    p.add_argument("model")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--deadline", type=float, help="seconds (default: production.confirm_deadline_s, 600)")
    p.add_argument("--wait", type=float, help="seconds to wait for version N itself (default: --deadline; less "
                                              "when something already waited, e.g. the DAG's wait_for_rollout); "
                                              "a rollback version always gets the full deadline")
    p.add_argument("--on-failed", choices=["rollback", "alert"],
                   help="what a failed rollout does (default: config on_failed_rollout, else rollback)")
    p.add_argument("--on-unknown", choices=["alert", "rollback"],
                   help="what a rollout production could not be observed for does (default: config "
                        "on_unknown_rollout, else alert: nothing is rolled back)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status polls")
    signing_key_arg(p)

    p = cmd("sync", "mirror committed versions into a local TF Serving model_base_path")
    p.add_argument("model")
    p.add_argument("--dest", required=True)
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--keep", type=int, help="keep only the K newest versions locally")
    p.add_argument("--interval", type=float, default=SYNC_INTERVAL_S,
                   help=f"seconds between rounds (default {SYNC_INTERVAL_S:g}; one round of an unchanged "
                        "bucket is a few requests: TF Serving itself lists S3 every second)")
    p.add_argument("--health-file", help="where each round writes its health record "
                                         "(default: DEST/.tfs-release-sync.json)")
    p.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_S, metavar="SECONDS",
                   help="a full round (a listing) at least this often; between them a round is one conditional GET "
                        "of the bucket's change marker and lists only when it changed "
                        f"(default {DEFAULT_RECONCILE_S:g}; 0: every round lists)")
    trusted_key_arg(p, "With keys, only versions signed by one of them are served; without, nothing is checked")

    p = cmd("sync-all", "several models into one TF Serving tree (ROOT/<model>/<N>) and its --model_config_file "
                        "(canary labels for rollout: canary models)")
    p.add_argument("--root", required=True, help="TF Serving's models folder (the same path in its container)")
    p.add_argument("--models", help="comma-separated (default: every model in the config)")
    p.add_argument("--model-config-file", help="the file TF Serving reads (default: ROOT/models.config)")
    p.add_argument("--serving-url", help="this replica's TF Serving REST address (e.g. http://localhost:8501): "
                                         "a canary label moves only once TF Serving has loaded its version")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--keep", type=int, help="keep only the K newest versions of each model (labelled ones stay)")
    p.add_argument("--interval", type=float, default=SYNC_INTERVAL_S,
                   help=f"seconds between rounds (default {SYNC_INTERVAL_S:g}; one round of an unchanged "
                        "bucket is a few requests: TF Serving itself lists S3 every second)")
    p.add_argument("--health-file", help="where each round writes its health record (default: "
                                         "ROOT/.tfs-release-sync.json; `tfs-release sync-health` reads it)")
    p.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_S, metavar="SECONDS",
                   help="a full round (a listing) at least this often; between them a round is one conditional GET "
                        "of the bucket's change marker and lists only when it changed "
                        f"(default {DEFAULT_RECONCILE_S:g}; 0: every round lists)")
    trusted_key_arg(p, "With keys, only versions signed by one of them are served; without, nothing is checked")

    p = cmd("checkpoint-relay", "one process that announces new complete checkpoints of many models to Airflow "
                                "(Asset events), told by the store's notifications, with a sweep as fallback")
    p.add_argument("--models", help="comma-separated (default: every model with trigger: checkpoint-event and "
                                    "checkpoint_poll_s: 0, i.e. no watcher on the triggerer)")
    p.add_argument("--listen", metavar="HOST:PORT", help="where the store posts notifications (SeaweedFS filer "
                   "webhook, S3 event notifications, EventBridge); GET /health there. Without it: sweeps only")
    p.add_argument("--sweep-interval", type=float, default=DEFAULT_SWEEP_S, metavar="SECONDS",
                   help=f"one listing per training location this often, the fallback for a lost notification "
                        f"(default {DEFAULT_SWEEP_S:g})")
    p.add_argument("--debounce", type=float, default=DEFAULT_DEBOUNCE_S, metavar="SECONDS",
                   help=f"one check this long after a model's last notification (default {DEFAULT_DEBOUNCE_S:g})")
    p.add_argument("--airflow-api", default=os.environ.get("AIRFLOW_API_URL"), metavar="URL",
                   help="Airflow's API server (default $AIRFLOW_API_URL); credentials: $AIRFLOW_API_TOKEN, or "
                        "$AIRFLOW_API_USER and $AIRFLOW_API_PASSWORD")
    p.add_argument("--once", action="store_true", help="one sweep (every model checked), then exit")

    p = cmd("labels", "canary models: which version is stable and which is canary (and their history)")
    p.add_argument("model")
    for name, what in (("promote", "the canary becomes stable (TF Serving unloads the old stable)"),
                       ("abort", "remove the canary (it never becomes stable); stable stays")):
        p = cmd(name, what)
        p.add_argument("model")
        p.add_argument("--reason", required=True, help="why (recorded in the registry and announced)")
        p.add_argument("--version", type=int, help="refuse unless the canary is this version")
        p.add_argument("--by", help="who (recorded)")

    p = cmd("keygen", "make an ECDSA P-256 key pair for signing versions: FILE (private, mode 0600) and "
                      "FILE.pub.pem (public: give it to the sync sidecars)")
    p.add_argument("path", metavar="FILE")

    p = cmd("sync-health", "health check of a sync sidecar: exit 0 when a round succeeded recently, else 1")
    p.add_argument("--dest", help="the sync's --dest (its health file is DEST/.tfs-release-sync.json)")
    p.add_argument("--health-file", help="the sync's --health-file, if it was given")
    p.add_argument("--max-age", type=float, help="seconds without a successful round before unhealthy "
                                                 "(default: 3 sync intervals, at least 30)")
    return parser


def _client():
    from registry.s3 import make_client
    return make_client()


def _baseline(client, model, args) -> dict | None:
    """The regression gate's baseline ({version, source}): production's call (production/baseline.py)."""
    from production.baseline import choose
    return choose(client, model, mode=args.baseline)


def sync_health(args) -> dict:
    """No config, no S3: reads the health file the sync writes (fast, for health checks)."""
    from registry.sync import check_health, health_path, read_health
    if not (args.dest or args.health_file):
        raise BadInput("sync-health needs --dest DIR (the sync's --dest) or --health-file FILE")
    if args.max_age is not None and args.max_age <= 0:
        raise BadInput(f"--max-age must be more than 0 seconds, got {args.max_age}")
    path = health_path(args.dest, args.health_file)
    ok, why = check_health(path, args.max_age)
    if not args.json:
        print(f"{'healthy' if ok else 'UNHEALTHY'}: {why}")
    if not ok:
        print(f"tfs-release sync-health: {why}", file=sys.stderr)
    return {"healthy": ok, "reason": why, "health_file": path, "record": read_health(path), "_exit": 0 if ok else 1}


def run(args) -> dict:
    """Dispatch to the subcommand's function (``set_defaults(func=..., needs=...)`` in build_parser):
    ``needs`` says what it takes besides ``args``: nothing, the loaded config, or one model of it."""
    if args.needs is None:
        return args.func(args)
    from registry import config as config_mod
    cfg = config_mod.load(args.config)
    if args.needs == "config":
        return args.func(args, cfg)
    return args.func(args, cfg.model(args.model))


def cmd_checkpoints(args, model) -> dict:
    from registry.checkpoints import list_checkpoints
    model.require("checkpoints")
    listing = list_checkpoints(_client(), model.checkpoints)
    out = listing.to_json()
    if not args.json:
        for ck in listing.checkpoints:
            mark = "*" if listing.newest is ck else " "
            state = "complete" if ck.complete else f"INCOMPLETE: {ck.reason}"
            print(f"{mark} {ck.uri}  step={ck.step}  {ck.size} bytes  {state}")
    if listing.newest is None:  # same reason text as export/release would give
        from registry.checkpoints import newest_complete
        try:
            newest_complete(_client(), model.checkpoints)
        except ReleaseError as exc:
            out.update(error=str(exc), _exit=exc.exit_code)
            print(f"tfs-release checkpoints: {exc}", file=sys.stderr)
    return out


def cmd_export(args, model) -> dict:
    from exporters.export import export_candidate
    out = export_candidate(_client(), model, checkpoint_uri=args.checkpoint, run_id=args.run_id,
                           keep_dir=args.keep_dir)
    if not args.json:
        print(out["candidate"])
    return out


def cmd_validate(args, model) -> dict:
    from validation.validate import validate_candidate
    v = validate_candidate(_client(), model, args.candidate, launcher=args.launcher, image=args.image,
                           deadline_s=args.deadline or model.extra.get("validation_deadline_s", 180),
                           tolerance=model.extra.get("tolerance", 1e-3),
                           latency_budget_ms=model.extra.get("latency_budget_ms"),
                           report_dir=args.report_dir, accept_regression=args.accept_regression,
                           baseline=_baseline(_client(), model, args))
    if not args.json:
        print(f"{'PASSED' if v['passed'] else 'FAILED'}: report {v['report']}")
    if not v["passed"]:
        print(f"tfs-release validate: {v['reason']}", file=sys.stderr)
        v["_exit"] = 1
    return v


def cmd_release(args, model) -> dict:
    out = release(args, model)
    if not args.json:
        print(out["summary"])
    return out


def cmd_stage(args, model) -> dict:
    from registry.staging import stage
    uri = stage(_client(), model.serving, args.dir, run_id=args.run_id)
    if not args.json:
        print(uri)
    return {"candidate": uri}


def cmd_publish(args, model) -> dict:
    from registry.publish import publish, read_verdict
    verdict = None
    if model.extra.get("approval") == "on_regression" and not args.approved_by:
        # the candidate's verdict (its run's, as publish finds it): an accepted regression needs an approval
        from registry.errors import CandidateError
        from registry.staging import read_candidate
        try:
            cand, body = read_candidate(_client(), args.candidate)
            run_id = body.get("run_id") or args.run_id or cand.prefix.rstrip("/").rsplit("/", 1)[-1]
            verdict = read_verdict(_client(), model.serving, run_id)
        except CandidateError:  # gone (e.g. published, then cleaned up): publish says what it is
            verdict = None
    approval = approval_for(args, model, verdict)
    res = publish(_client(), model.serving, model.name, args.candidate,
                  allow_unvalidated=args.unvalidated, run_id=args.run_id, approval=approval,
                  signer=_signer(args, model))
    from production.lifecycle import on_publish
    state = on_publish(_client(), model, res.version)
    if not args.json:
        print(res.version)
    return {**res.to_json(), **({"labels": state} if state else {}), **({"approval": approval} if approval else {})}


def cmd_versions(args, model) -> dict:
    from registry.versions import list_versions
    vs = list_versions(_client(), model.serving)
    if not args.json:
        for v in vs:
            extra = (f" rollback_of={v['rollback_of']}" if v["rollback_of"] else "") + \
                (f" rollout={v['rollout']}" if v.get("rollout") else "")
            signed = f"signed:{v['signed_by'][:12]}" if v.get("signed_by") else "unsigned"
            print(f"{v['version']:>5}  {v['created']}  step={v['step']}  {v['verdict']}  {signed}  "
                  f"{v['checkpoint']}{extra}")
    return {"versions": vs}


def cmd_verify(args, model) -> dict:
    from registry.signing import short, trusted_keys
    from registry.versions import verify
    trusted = trusted_keys(args.trusted_key)
    v = verify(_client(), model.serving, deep=args.deep, grace_seconds=args.grace, trusted=trusted)
    out = v.to_json()
    if not args.json:
        print(f"{len(v.versions)} committed version(s); {len(v.problems)} problem(s); "
              f"{len(v.orphans)} orphan(s); {len(v.in_progress)} in progress")
        for n, sig in sorted(v.signatures.items()):
            print(f"version {n}: " + ("unsigned" if not sig["signed"] else
                                      f"signed by key {short(sig['key_id'])}, verified with {sig['key']}"
                                      if sig["verified"] else f"signed by key {short(sig['key_id'])}"
                                      + ("" if trusted else " (not checked: no --trusted-key)")))
        for p in v.problems:
            print(f"PROBLEM version {p['version']}: {p['path']}: {p['problem']}")
        for o in v.orphans:
            print(f"orphan {o['kind']}: {o['uri']}")
    if not v.ok:
        out["_exit"] = 1
    return out


def cmd_clean_orphans(args, model) -> dict:
    from registry.versions import clean_orphans
    cleaned = clean_orphans(_client(), model.serving, grace_seconds=args.grace)
    if not args.json:
        for o in cleaned:
            print(f"cleaned {o['kind']} {o['uri']} ({o['objects_removed']} objects)")
    return {"cleaned": cleaned}


def cmd_clean_staging(args, model) -> dict:
    from registry.staging import sweep
    if args.older_than_days < 0:
        raise BadInput("--older-than-days must be 0 or more")
    removed = sweep(_client(), model.serving, older_than_s=args.older_than_days * 86400)
    if not args.json:
        for r in removed:
            print(f"removed {r['uri']} ({r['age_s'] / 86400:.1f} days old, {r['objects_removed']} objects)")
        if not removed:
            print("nothing to remove")
    return {"removed": removed}


def cmd_retention(args, model) -> dict:
    from production.lifecycle import retention
    removed = retention(_client(), model, args.keep)
    if not args.json:
        print("removed: " + (" ".join(map(str, removed)) or "nothing"))
    return {"removed": removed}


def cmd_rollback(args, model) -> dict:
    from production.lifecycle import rollback
    from registry.signing import trusted_keys
    res = rollback(_client(), model, to=args.to, reason=args.reason, by=args.by or "tfs-release rollback",
                   signer=_signer(args, model), trusted=trusted_keys(args.trusted_key))
    if not args.json:
        print(res["served"])
    return {**res, "version": res["served"]}


def cmd_confirm(args, model) -> dict:
    from production.rollout import confirm
    from production.rules import CONFIRMED, PROMOTED
    if args.deadline is not None and args.deadline <= 0:
        raise BadInput(f"--deadline must be more than 0 seconds, got {args.deadline}")
    if args.wait is not None and args.wait <= 0:
        raise BadInput(f"--wait must be more than 0 seconds, got {args.wait}")
    rec = confirm(_client(), model, args.version, deadline_s=args.deadline, on_failed=args.on_failed,
                  poll_s=args.poll, wait_s=args.wait, on_unknown=args.on_unknown, signer=_signer(args, model))
    if not args.json:
        print(f"{model.name} version {args.version}: {rec['outcome']}"
              + (f" ({rec['reason']})" if rec.get("reason") else "")
              + (f"; {rec['action']}" if rec.get("action") else "")
              + (f"; version {rec['rollback_version']}: {rec['rollback']['outcome']}" if rec.get("rollback") else "")
              + f"; record {rec['record']}")
    if rec["outcome"] not in (CONFIRMED, PROMOTED):
        # one line for the alert: what happened in production, TF Serving's error, what was done
        rec["reason"] = (f"rollout of {model.name} version {args.version} {rec['outcome']}: {rec.get('reason')}"
                         + (f"; {rec['action']}" if rec.get("action") else "")
                         + (f" ({rec['rollback']['outcome']} in production)" if rec.get("rollback") else ""))
        print(f"tfs-release confirm: {rec['reason']}", file=sys.stderr)
        rec["_exit"] = 1
    return rec


def _sync_args(args) -> None:
    """The sidecars' shared arguments (sync, sync-all), checked before anything starts."""
    if args.interval <= 0:
        raise BadInput(f"--interval must be more than 0 seconds, got {args.interval}")
    if args.reconcile_interval < 0:
        raise BadInput(f"--reconcile-interval must be 0 or more seconds, got {args.reconcile_interval}")
    if args.keep is not None and args.keep < 1:
        raise BadInput(f"--keep must be at least 1, got {args.keep}")


def _signer(args, model):
    """The signing key (--signing-key, $TFS_RELEASE_SIGNING_KEY_FILE, $TFS_RELEASE_SIGNING_KEY), or None;
    BadInput when the model's config says its versions are signed (``signing_conn_id``) and there is none:
    an unsigned version (or rollback copy) would never be served by replicas that verify."""
    from registry.signing import KEY_FILE_ENV, signing_key
    key = signing_key(getattr(args, "signing_key", None))
    if key is None and model.extra.get("signing_conn_id"):
        raise BadInput(f"{model.name}'s versions are signed (config signing_conn_id: "
                       f"{model.extra['signing_conn_id']}), and no signing key was given: pass --signing-key FILE "
                       f"or set {KEY_FILE_ENV}. Replicas that verify would not serve an unsigned version.")
    return key


def _trusted(args, what: str):
    """The sidecars' trusted keys (--trusted-key, $TFS_RELEASE_TRUSTED_KEYS), said once at start."""
    from registry.signing import trusted_keys
    keys = trusted_keys(args.trusted_key)
    if keys:
        log.info("%s serves only versions signed by: %s", what, keys.describe())
    else:
        log.warning("%s verifies no signatures (no --trusted-key, no $TFS_RELEASE_TRUSTED_KEYS): it serves any "
                    "committed version, signed or not", what)
    return keys


def cmd_keygen(args) -> dict:
    from registry.signing import keygen
    private, public, kid = keygen(args.path)
    if not args.json:
        print(f"signing key {private} (keep it secret: the release pipeline's Airflow connection or "
              f"--signing-key)\npublic key  {public} (give it to the sync sidecars: --trusted-key)\nkey id      {kid}")
    return {"private_key": private, "public_key": public, "key_id": kid}


def cmd_sync(args, model) -> dict:
    from registry.sync import Health, health_path, sync_forever, sync_once
    _sync_args(args)
    trusted = _trusted(args, f"sync of {model.name}")
    health = Health(health_path(args.dest, args.health_file), serving=model.serving, interval=args.interval)
    if args.once:
        r = sync_once(_client(), model.serving, args.dest, keep=args.keep, health=health, trusted=trusted,
                      model=model.name)
        if not args.json:
            print(f"versions in {args.dest}: {r.present} (added {r.added}, removed {r.removed}"
                  f"{', held ' + str([h['version'] for h in r.held]) if r.held else ''})")
        out = r.to_json()
        if not r.ok:  # uncertain listing, or a version that could not be fetched: not a success
            print(f"tfs-release sync: {'; '.join(r.problems)}", file=sys.stderr)
            out["_exit"] = 1
        return out
    sync_forever(_client(), model.serving, args.dest, keep=args.keep, interval=args.interval,
                 on_result=lambda r: log.info("now serving versions %s", r.present), health=health,
                 reconcile_s=args.reconcile_interval, trusted=trusted, model=model.name)
    return {}


def labels_cmd(args, model) -> dict:
    from production import lifecycle
    from registry import labels
    if args.command == "labels":
        state, _ = labels.read(_client(), model.serving)
    elif args.command == "promote":
        state = lifecycle.promote(_client(), model, reason=args.reason, by=args.by, expect=args.version)
    else:
        state = lifecycle.abort(_client(), model, reason=args.reason, by=args.by, expect=args.version)
    if not args.json:
        print(f"{model.name}: stable {state['stable']}, canary {state['canary']}"
              + (f"; aborted {state['aborted']}" if state.get("aborted") else ""))
        for h in state.get("history", [])[-5:]:
            print(f"  {h['time']} {h['action']} v{h['version']}" + (f" by {h['by']}" if h.get("by") else "")
                  + (f": {h['reason']}" if h.get("reason") else ""))
    return state


def sync_all(args, cfg) -> dict:
    _sync_args(args)
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(cfg.models)
    models = [cfg.model(n) for n in names]
    if any(m.extra.get("rollout") == "canary" for m in models) and not args.serving_url:
        raise BadInput("canary models need --serving-url (this replica's TF Serving REST address): a label may only "
                       "move to a version TF Serving has loaded")
    config_file = args.model_config_file or os.path.join(args.root, "models.config")
    from registry.serving_config import sync_root_round
    from registry.sync import Health, health_path, run_forever
    from tfs_api.status import available_versions
    os.makedirs(args.root, exist_ok=True)
    trusted = _trusted(args, f"sync-all of {', '.join(m.name for m in models)}")
    health = Health(health_path(args.root, args.health_file), serving=", ".join(str(m.serving) for m in models),
                    interval=args.interval)

    def one_round() -> dict:
        return sync_root_round(_client(), models, args.root, config_file=config_file, keep=args.keep, health=health,
                               available=lambda name: available_versions(args.serving_url, name), trusted=trusted)
    if not args.once:
        from registry.index import ChangeGate
        from registry.sync import gated
        gate = ChangeGate(_client(), [m.serving.bucket for m in models], reconcile_s=args.reconcile_interval)

        def full_round() -> bool:
            out = one_round()
            return not out["problems"] and not out["pending"]
        run_forever(gated(full_round, gate, health), interval=args.interval, health=health, what="sync-all round")
        return {}
    out = one_round()
    if not args.json:
        print(f"{config_file}: " + "; ".join(
            f"{e['name']} " + (f"versions {e['versions']} labels {e['labels']}" if e["rollout"] == "canary"
                               else f"latest of {out['models'].get(e['name'])}") for e in out["config"]["models"]))
    if out["problems"]:
        print(f"tfs-release sync-all: {out['problems']}", file=sys.stderr)
        out["_exit"] = 1
    return out


def relay_models(args, cfg) -> list:
    """The models the relay watches: --models, else every event-triggered model without a watcher."""
    if args.models:
        models = [cfg.model(n.strip()) for n in args.models.split(",") if n.strip()]
        for m in models:
            m.require("checkpoints")
            if m.trigger != "checkpoint-event":
                raise BadInput(f"{m.name} has trigger: {m.trigger}: its release DAG is not scheduled on its checkpoints "
                               f"Asset, so an announcement would start nothing. Use trigger: checkpoint-event")
            if m.checkpoint_poll_s > 0:
                raise BadInput(f"{m.name} is watched by the triggerer (checkpoint_poll_s: {m.checkpoint_poll_s:g}): "
                               f"set checkpoint_poll_s: 0 in its config to let the relay watch it instead")
        return models
    models = [m for m in cfg.models.values()
              if m.trigger == "checkpoint-event" and m.checkpoint_poll_s == 0 and m.checkpoints is not None]
    if not models:
        raise BadInput(f"no model in {cfg.path} is left to the relay: it watches models with trigger: checkpoint-event "
                       f"and checkpoint_poll_s: 0 (e.g. defaults: {{checkpoint_poll_s: 0}}), or the ones --models names")
    return models


def checkpoint_relay(args) -> dict:
    import threading

    from registry import config as config_mod
    from registry.airflow_events import AirflowAssets, EventError
    from registry.checkpoint_relay import TOKEN_ENV, Relay, serve
    # as the DAG files do: an invalid model entry is not watched (its DAG names the problem), the
    # others are; a fleet's detection does not stop for one typo
    cfg = config_mod.load(args.config, strict=False)
    for name, why in sorted(cfg.errors.items()):
        print(f"tfs-release checkpoint-relay: not watching {name}: {why}", file=sys.stderr)
    if args.sweep_interval <= 0:
        raise BadInput(f"--sweep-interval must be more than 0 seconds, got {args.sweep_interval}")
    if args.debounce < 0:
        raise BadInput(f"--debounce must be 0 or more seconds, got {args.debounce}")
    models = relay_models(args, cfg)
    try:
        sink = AirflowAssets(args.airflow_api, token=os.environ.get("AIRFLOW_API_TOKEN"),
                             user=os.environ.get("AIRFLOW_API_USER"), password=os.environ.get("AIRFLOW_API_PASSWORD"))
    except EventError as exc:
        raise BadInput(f"checkpoint-relay: {exc}") from None
    relay = Relay(_client(), models, sink, sweep_s=args.sweep_interval, debounce_s=args.debounce)
    if args.once:
        decided = relay.sweep()
        out = {"models": {w.name: w.last for w in relay.watched}, "fired": relay.stats["fired"],
               "checked": sorted(decided)}
        if not args.json:
            for w in relay.watched:
                print(f"{w.name}: {w.last}")
        if not relay.stats["last_sweep_ok"]:
            print(f"tfs-release checkpoint-relay: {relay.stats['last_error']}", file=sys.stderr)
            out["_exit"] = 1
        return out
    server = None
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise BadInput(f"--listen {args.listen!r}: write HOST:PORT, e.g. 0.0.0.0:8790")
        token = os.environ.get(TOKEN_ENV) or None
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            raise BadInput(f"--listen {args.listen} accepts notifications from the network: set {TOKEN_ENV} (the "
                           f"bearer token the store's notifications carry), or listen on 127.0.0.1")
        server = serve(relay, host, int(port), token)
    print(f"checkpoint relay: {len(models)} model(s) in {len(relay.locations)} location(s) "
          f"({', '.join('s3://' + loc.bucket + '/' + loc.prefix for loc in relay.locations)}); sweep every "
          f"{args.sweep_interval:g}s" + (f"; notifications on http://{args.listen}/" if server else "; no --listen: "
                                          "sweeps only"), file=sys.stderr, flush=True)
    stop = threading.Event()

    def _stop(*_):
        stop.set()
        relay.wake()
    import signal
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    relay.run(stop)
    if server is not None:
        server.shutdown()
    return {}


def approval_for(args, model, verdict: dict | None) -> dict | None:
    """The approval ``publish``/``release`` record in the manifest (``--approved-by``/``--reason``), or
    BadInput (exit 2) when the model's ``approval`` asks for one and it is missing: ``required`` always;
    ``on_regression`` when the candidate's verdict has an accepted regression. (The DAG's ``approve``
    task asks a person instead; rollback needs none.)"""
    import datetime as _dt
    by, why = (getattr(args, "approved_by", None) or "").strip(), (getattr(args, "reason", None) or "").strip()
    if bool(by) != bool(why):
        raise BadInput(f"--approved-by and --reason go together: pass both (who approved publishing {model.name}, "
                       f"and why), e.g. --approved-by alice --reason 'golden set reviewed (TICKET-7)'")
    mode = model.extra.get("approval", "none")
    gate = (verdict or {}).get("regression") or {}
    if not by and mode == "required":
        raise BadInput(f"{model.name} needs an approval to publish (its config says approval: required): pass "
                       f"--approved-by NAME --reason TEXT (recorded in the version's manifest)")
    if not by and mode == "on_regression" and gate.get("status") == "accepted":
        raise BadInput(f"{model.name} needs an approval to publish this candidate (approval: on_regression, and its "
                       f"verdict accepts a regression: {gate.get('accepted_reason') or 'no reason given'}): pass "
                       f"--approved-by NAME --reason TEXT (recorded in the version's manifest)")
    if not by:
        return None
    return {"approved_by": by, "comment": why, "decided": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def release(args, model) -> dict:
    """checkpoint -> (skip if already published) -> export -> validate -> publish."""
    from registry import checkpoints
    from registry.versions import published_from
    client = _client()
    model.require("checkpoints")
    ck, _ = checkpoints.resolve(client, model.checkpoints, args.checkpoint)
    done = published_from(client, model.serving, ck.uri, ck.files)
    if done is not None and not args.force:
        return {"skipped": True, "version": done, "checkpoint": ck.uri,
                "summary": f"nothing new: {ck.uri} is already published as version {done} (--force to release again)"}
    signer = None
    if not args.dry_run:
        approval_for(args, model, None)  # approval: required is refused before any work (exit 2)
        signer = _signer(args, model)    # and a model that must be signed, without its key
    from exporters.export import export_candidate
    from validation.validate import validate_candidate
    exported = export_candidate(client, model, checkpoint_uri=ck.uri)
    verdict = validate_candidate(client, model, exported["candidate"], launcher=args.launcher, image=args.image,
                                 deadline_s=model.extra.get("validation_deadline_s", 180),
                                 tolerance=model.extra.get("tolerance", 1e-3),
                                 latency_budget_ms=model.extra.get("latency_budget_ms"),
                                 accept_regression=args.accept_regression,
                                 baseline=_baseline(client, model, args))
    out = {"skipped": False, "regression": (verdict.get("regression") or {}).get("summary"), "checkpoint": ck.uri, "candidate": exported["candidate"], "passed": verdict["passed"],
           "report": verdict["report"], "report_url": verdict.get("report_url"), "reason": verdict["reason"]}
    if not verdict["passed"]:
        print(f"tfs-release release: validation failed: {verdict['reason']}", file=sys.stderr)
        return {**out, "_exit": 1, "summary": f"FAILED validation, nothing published; report {verdict['report']}"}
    if args.dry_run:
        return {**out, "summary": f"validated (dry run, not published); report {verdict['report']}"}
    try:  # approval: on_regression and the gate accepted a regression: who approved it
        approval = approval_for(args, model, verdict)
    except BadInput as exc:
        raise BadInput(f"{exc}; the validated candidate {exported['candidate']} can be published so with "
                       f"`tfs-release publish`") from None
    from registry.publish import publish
    pub = publish(client, model.serving, model.name, exported["candidate"], approval=approval, signer=signer)
    from production.lifecycle import on_publish
    on_publish(client, model, pub.version)
    return {**out, "version": pub.version, **({"approval": approval} if approval else {}),
            "summary": f"published {model.name} version {pub.version} from {ck.uri}; report {verdict['report']}"}


# subcommand -> (its function, what it takes besides args: None, "config" or "model")
COMMANDS = {
    "checkpoints": (cmd_checkpoints, "model"), "export": (cmd_export, "model"),
    "validate": (cmd_validate, "model"), "release": (cmd_release, "model"), "stage": (cmd_stage, "model"),
    "publish": (cmd_publish, "model"), "versions": (cmd_versions, "model"), "verify": (cmd_verify, "model"),
    "clean-orphans": (cmd_clean_orphans, "model"), "clean-staging": (cmd_clean_staging, "model"),
    "retention": (cmd_retention, "model"), "rollback": (cmd_rollback, "model"), "confirm": (cmd_confirm, "model"),
    "sync": (cmd_sync, "model"), "sync-all": (sync_all, "config"),
    "labels": (labels_cmd, "model"), "promote": (labels_cmd, "model"), "abort": (labels_cmd, "model"),
    "sync-health": (sync_health, None), "keygen": (cmd_keygen, None),
    "checkpoint-relay": (checkpoint_relay, None),   # loads the config itself, tolerating bad entries
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None) or os.environ.get("TFS_RELEASE_CONFIG", "config/models.yaml")
    args.json = getattr(args, "json", False)
    result_file = getattr(args, "result", None)
    verbose = getattr(args, "verbose", False)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")  # great-expectations' progress bars
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "absl", "tensorflow", "h5py",
                  "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        out = run(args)
    except ReleaseError as exc:
        print(f"tfs-release {args.command}: {exc}", file=sys.stderr)
        err = {"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}
        if args.json:
            print(json.dumps(err))
        _write_result(result_file, err)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # SIGTERM during validation unwinds here after cleanup
        if type(exc).__name__ == "Terminated":
            print(f"tfs-release {args.command}: terminated (SIGTERM); cleaned up", file=sys.stderr)
            return 143
        raise
    code = out.pop("_exit", 0) if isinstance(out, dict) else 0
    if args.json:
        print(json.dumps(out, default=str))
    _write_result(result_file, {**out, "exit_code": code})
    return code


def _write_result(path: str | None, obj: dict) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(obj, fh, default=str)
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
