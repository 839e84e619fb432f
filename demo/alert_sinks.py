"""Local alert receivers: a real SMTP server (aiosmtpd) and a real HTTP webhook receiver (Slack
incoming-webhook compatible: POST JSON, answers 200 "ok"), both on free 127.0.0.1 ports.

Every message is kept in memory and written to a folder (``mail-0001.eml``, ``webhook-0001.json``),
and the Airflow connections that point at them are ready to put in the environment:

    with AlertSinks(".run/alerts") as sinks:
        env.update(sinks.connection_env())      # AIRFLOW_CONN_SLACK_ALERTS, AIRFLOW_CONN_SMTP_ALERTS
        ...                                     # run the DAG (models.yaml: alerts.slack_conn_id ...)
        sinks.wait(mails=1, webhooks=1, timeout=30)
        sinks.mails[0].subject, sinks.mails[0].text, sinks.webhooks[0].payload["text"]

    python demo/alert_sinks.py --dir .run/alerts   # runs until SIGTERM; prints ports and env as JSON

Runs in the worker venv (aiosmtpd is there); Airflow sends to it over TCP. Loopback only, no TLS,
no authentication: a test and demo stand-in for a mail relay and Slack.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
WEBHOOK_TOKEN = "T0000LOCAL/B0000LOCAL/localwebhooktoken"  # the path a Slack webhook URL would carry


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    html: str
    text: str          # the HTML body as plain text (tags removed, entities decoded)
    plain: str | None  # the text/plain part, if the message has one
    raw: bytes = field(repr=False)
    path: str = ""


@dataclass
class Webhook:
    path: str
    payload: dict
    file: str = ""


def html_to_text(body: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def _free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AlertSinks:
    """Start both receivers (``with`` or start/stop); ``mails`` and ``webhooks`` fill as they arrive."""

    def __init__(self, folder: str, *, slack_conn_id: str = "slack_alerts", smtp_conn_id: str = "smtp_alerts",
                 host: str = HOST):
        self.folder, self.host = os.path.abspath(folder), host  # host: e.g. a Docker bridge's gateway
        # address, for senders in containers (never a public interface: no TLS, no authentication)
        self.slack_conn_id, self.smtp_conn_id = slack_conn_id, smtp_conn_id
        self.mails: list[Mail] = []
        self.webhooks: list[Webhook] = []
        self._lock = threading.Condition()
        self._smtp = None
        self._http: ThreadingHTTPServer | None = None
        self.smtp_port = self.webhook_port = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "AlertSinks":
        from aiosmtpd.controller import Controller
        os.makedirs(self.folder, exist_ok=True)
        self.smtp_port = _free_port(self.host)
        self._smtp = Controller(_SmtpHandler(self), hostname=self.host, port=self.smtp_port)
        self._smtp.start()
        self._http = ThreadingHTTPServer((self.host, 0), _webhook_handler(self))
        self._http.daemon_threads = True
        self.webhook_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="alert-webhook", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None

    def __enter__(self) -> "AlertSinks":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what Airflow needs --------------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.webhook_port}/services/{WEBHOOK_TOKEN}"

    def connections(self) -> dict[str, dict]:
        """Airflow connections (JSON form) for the two receivers, by connection id."""
        return {
            # SlackWebhookHook: URL = host (when it has a scheme) + "/" + password (the token)
            self.slack_conn_id: {"conn_type": "slackwebhook", "host": f"http://{self.host}:{self.webhook_port}/services",
                                 "password": WEBHOOK_TOKEN, "extra": {"timeout": 10}},
            # SmtpHook: plain SMTP on loopback: no SSL, no STARTTLS, no login
            self.smtp_conn_id: {"conn_type": "smtp", "host": self.host, "port": self.smtp_port,
                                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10,
                                          "retry_limit": 1, "from_email": "tfs-release@localhost"}},
        }

    def connection_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_<ID>`` variables (JSON values) for the two receivers."""
        return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in self.connections().items()}

    # -- what arrived --------------------------------------------------------------------------
    def wait(self, *, mails: int = 0, webhooks: int = 0, timeout: float = 30, about: str | None = None) -> bool:
        """Block until at least that many of each arrived (True) or the timeout passed (False);
        ``about``: count only those that name it (a model: its alerts, while other runs alert too)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.about(about)[0]) < mails or len(self.about(about)[1]) < webhooks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def about(self, text: str | None) -> tuple[list[Mail], list[Webhook]]:
        """(mails, webhooks) so far whose subject or text names ``text`` (all of them: None)."""
        if text is None:
            return list(self.mails), list(self.webhooks)
        return ([m for m in self.mails if text in m.subject],
                [w for w in self.webhooks if text in json.dumps(w.payload)])

    def _next_file(self, kind: str, ext: str) -> str:
        """The next free ``<kind>-NNNN<ext>`` in the folder: earlier sessions' messages are kept."""
        taken = [int(f[len(kind) + 1:-len(ext)]) for f in os.listdir(self.folder)
                 if f.startswith(kind + "-") and f.endswith(ext) and f[len(kind) + 1:-len(ext)].isdigit()]
        return os.path.join(self.folder, f"{kind}-{max(taken, default=0) + 1:04d}{ext}")

    def _record_mail(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        body = part.get_content() if part is not None else ""
        plain = msg.get_body(preferencelist=("plain",))
        mail = Mail(mail_from=mail_from, rcpt_tos=list(rcpt_tos), subject=str(msg.get("Subject", "")),
                    html=body, text=html_to_text(body) if part is not None and part.get_content_subtype() == "html"
                    else body, plain=plain.get_content() if plain is not None else None, raw=raw)
        with self._lock:
            mail.path = self._next_file("mail", ".eml")
            with open(mail.path, "wb") as fh:
                fh.write(raw)
            self.mails.append(mail)
            self._lock.notify_all()

    def _record_webhook(self, path: str, payload: dict) -> None:
        with self._lock:
            hook = Webhook(path=path, payload=payload,
                           file=self._next_file("webhook", ".json"))
            with open(hook.file, "w", encoding="utf-8") as fh:
                json.dump({"path": path, "payload": payload}, fh, indent=1)
            self.webhooks.append(hook)
            self._lock.notify_all()


class _SmtpHandler:
    def __init__(self, sinks: AlertSinks):
        self.sinks = sinks

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.sinks._record_mail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def _webhook_handler(sinks: AlertSinks):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                self._answer(400, b"invalid_payload")
                return
            if self.path != f"/services/{WEBHOOK_TOKEN}":
                self._answer(404, b"no_service")  # what Slack answers for a wrong webhook URL
                return
            sinks._record_webhook(self.path, payload)
            self._answer(200, b"ok")

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet: the caller reports what arrived
            pass
    return Handler


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="run the local SMTP server and webhook receiver until SIGTERM")
    p.add_argument("--dir", required=True, help="folder for received messages (mail-*.eml, webhook-*.json)")
    p.add_argument("--slack-conn-id", default="slack_alerts")
    p.add_argument("--smtp-conn-id", default="smtp_alerts")
    a = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with AlertSinks(a.dir, slack_conn_id=a.slack_conn_id, smtp_conn_id=a.smtp_conn_id) as sinks:
        print(json.dumps({"smtp_port": sinks.smtp_port, "webhook_port": sinks.webhook_port,
                          "webhook_url": sinks.webhook_url, "dir": sinks.folder, "pid": os.getpid(),
                          "env": sinks.connection_env()}), flush=True)
        seen = (0, 0)
        while not stop.wait(0.5):
            now = (len(sinks.mails), len(sinks.webhooks))
            if now != seen:
                print(f"alert sinks: {now[0]} mail(s), {now[1]} webhook(s) received in {sinks.folder}",
                      file=sys.stderr, flush=True)
                seen = now
        print(f"alert sinks stopped: {len(sinks.mails)} mail(s), {len(sinks.webhooks)} webhook(s) received "
              f"in {sinks.folder}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
