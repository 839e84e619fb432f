"""`make airflow`: Airflow standalone (API server + UI, scheduler, DAG processor, triggerer; SQLite,
LocalExecutor) on 127.0.0.1 with this clone's DAGs, ready to click through. It opens the demo's own
Airflow home (.run/demo/airflow), so after `make demo` the UI shows the demo's runs: the published
versions, the skipped run, the failed run with its alert, and each validate task's report link.

- S3: the SeaweedFS of `make services`, as the ``aws_default`` connection;
- config: the demo's (.run/demo/config/models.yaml: config/models.yaml + the serving image that can
  be had here + alert channels), written the same way `make demo` writes it;
- alerts: local SMTP and webhook receivers in this process; what arrives lands in .run/demo/alerts/
  (beside the demo's own alerts);
- checkpoints: the checkpoint relay (`tfs-release checkpoint-relay`, log .run/demo/relay.log) on the
  address SeaweedFS's webhook posts to (`make services`): a complete checkpoint copied into the
  training bucket starts the model's release (once its DAG is unpaused).

Do not run `make demo` while this runs: both use the same SQLite metadata database.

Prints the UI address and the admin login; Ctrl-C (or SIGTERM) stops Airflow and the receivers.
Port: AIRFLOW_PORT (default 8080).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from demo.alert_sinks import AlertSinks  # noqa: E402
from demo.run_demo import DEMO, demo_config, say, serving_setup  # noqa: E402


RELAY_LOG = os.path.join(DEMO, "relay.log")


def start_relay(config: str, af) -> subprocess.Popen:
    """The checkpoint relay for the config's models, posting Asset events to this Airflow as its admin."""
    relay = services.relay_settings()
    env = dict(os.environ, AIRFLOW_API_URL=af.url, AIRFLOW_API_USER=af.username, AIRFLOW_API_PASSWORD=af.password,
               TFS_RELEASE_RELAY_TOKEN=relay["token"])
    with open(RELAY_LOG, "ab") as log:
        return subprocess.Popen([os.path.join(ROOT, "bin", "tfs-release"), "checkpoint-relay", "--config", config,
                                 "--listen", relay["listen"], "--sweep-interval", "60"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    state = services.up()
    sw = services.SeaweedFS(**state["seaweedfs"])
    os.environ.update(sw.env())
    home = os.path.join(DEMO, "airflow")
    port = services.ui_port()
    say("== serving environment for validation")
    launcher, image = serving_setup()
    cfg = demo_config(image)
    conns = {"aws_default": services.aws_connection(sw.env()),
             services.SIGNING_CONN_ID: services.signing_connection(services.signing_keys()[0])}
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with AlertSinks(os.path.join(DEMO, "alerts")) as sinks:
        extra = dict(sinks.connection_env())
        if state.get("docker", {}).get("ok"):
            extra["DOCKER_HOST"] = state["docker"]["host"]
        say(f"== starting airflow standalone in {home} (log: {home}/standalone.log), about a minute...")
        af = services.start_airflow(home, port=port, config=cfg, conns=conns, extra_env=extra)
        relay = start_relay(cfg, af)
        try:
            say(f"\nAirflow UI:  {af.url}\nlogin:       {af.username} / {af.password}\n"
                f"DAGs:        release__<model> for each model in {os.path.relpath(cfg, ROOT)}, and "
                f"model_rollback; they start paused: unpause one, then Trigger (the form has the params)\n"
                f"validation:  launcher '{launcher}'" + (f", serving image {image}" if image else "") +
                f"\nS3:          {sw.endpoint} (connection aws_default; credentials in .run/services.env)\n"
                f"alerts:      {sinks.folder} (local SMTP :{sinks.smtp_port}, webhook :{sinks.webhook_port})\n"
                f"checkpoints: the checkpoint relay on {services.relay_settings()['listen']} (log {RELAY_LOG})\n"
                "Ctrl-C stops Airflow.")
            while services._alive(af.pid):
                time.sleep(1)
            say(f"airflow standalone exited; see {af.log}")
        except KeyboardInterrupt:
            pass
        finally:
            relay.terminate()
            relay.wait(30)
            af.stop()
            say("airflow standalone and the checkpoint relay stopped")


if __name__ == "__main__":
    main()
