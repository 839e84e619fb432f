"""Entry point of the TF-Serving stand-in: ``python -m standin.server [TF Serving flags]``.

This is NOT TensorFlow Serving. It is tfs-release's stand-in for ``tensorflow_model_server``
(whose binary and images cannot be had on this project's machines): the same flags, environment
(MODEL_NAME / MODEL_BASE_PATH as in the tensorflow/serving image), model config file
(``--model_config_file``, re-read every ``--model_config_file_poll_wait_seconds``), REST and gRPC
APIs, version polling and warmup, with the differences listed in standin/README.md.

Startup follows the real server: the config is checked (a bad one ends the process with "Failed to
start server"), every model's versions start loading, and the ports open only once each model has a
version AVAILABLE (if one fails first, the process exits with "Failed to start server"); then gRPC
and REST serve until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("standin")

# TF Serving flags the stand-in accepts but does not act on (a warning names them).
IGNORED_FLAGS = {
    "grpc_socket_path", "rest_api_enable_cors_support", "enable_batching", "batching_parameters_file",
    "enable_per_model_batching_parameters", "num_load_threads", "num_unload_threads",
    "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_session_config_file",
    "use_alts_credentials", "platform_config_file", "per_process_gpu_memory_fraction",
    "grpc_channel_arguments", "monitoring_config_file", "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool",
    "enable_signature_method_name_check", "enable_profiler", "thread_pool_factory_config_file",
    "mixed_precision", "skip_initialize_tpu", "enable_grpc_healthcheck_service", "rest_api_num_threads",
}


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "t", "yes", "y", ""):
        return True
    if t in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tensorflow_model_server (tfs-release stand-in)", allow_abbrev=False,
        description="TF-Serving stand-in: TensorFlow Serving's REST/gRPC APIs and model config for SavedModels.")
    a = p.add_argument
    a("--port", type=int, default=8500, help="gRPC port (default 8500)")
    a("--rest_api_port", type=int, default=8501,
      help="REST port; 0 disables REST (default 8501, as the tensorflow/serving image passes)")
    a("--rest_api_timeout_in_ms", type=int, default=30000)
    a("--host", default="0.0.0.0", help="stand-in only: address to bind both ports (default 0.0.0.0)")
    a("--model_name", default=None, help="default: $MODEL_NAME, else 'default'")
    a("--model_base_path", default=None,
      help="default: $MODEL_BASE_PATH/$MODEL_NAME when either variable is set (the image's entrypoint)")
    a("--model_config_file", default="",
      help="text-format ModelServerConfig (several models, version policies, labels); "
           "--model_name/--model_base_path are then ignored")
    a("--model_config_file_poll_wait_seconds", type=int, default=0,
      help="re-read --model_config_file this often (0: read once at startup)")
    a("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True, default=False,
      help="a new label may point at a version that is not AVAILABLE yet")
    a("--file_system_poll_wait_seconds", type=int, default=1)
    a("--max_num_load_retries", type=int, default=5)
    a("--load_retry_interval_micros", type=int, default=60 * 1000 * 1000)
    a("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    a("--num_request_iterations_for_warmup", type=int, default=0)
    a("--saved_model_tags", default="serve")
    a("--tensorflow_intra_op_parallelism", type=int, default=0)
    a("--tensorflow_inter_op_parallelism", type=int, default=0)
    a("--grpc_max_threads", type=int, default=4 * (os.cpu_count() or 1))
    a("--enable_serialization_as_tensor_content", type=_bool, nargs="?", const=True, default=False)
    a("--ssl_config_file", default="",
      help="text-format SSLConfig (server_key, server_cert, custom_ca, client_verify): gRPC over TLS")
    a("--log_level", default=os.environ.get("STANDIN_LOG_LEVEL", "INFO"), help="stand-in only")
    return p


def resolve_model(args) -> tuple[str, str]:
    """Flags win; otherwise the tensorflow/serving image's entrypoint convention."""
    name = args.model_name or os.environ.get("MODEL_NAME") or "default"
    base = args.model_base_path
    if not base and ("MODEL_NAME" in os.environ or "MODEL_BASE_PATH" in os.environ):
        base = os.path.join(os.environ.get("MODEL_BASE_PATH", "/models"), name)
    return name, base


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d: %(levelname).1s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(getattr(logging, level.upper(), logging.INFO))
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    setup_logging(args.log_level)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("[stand-in] received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for item in unknown:
        flag = item.split("=", 1)[0].lstrip("-")
        if item.startswith("--") and flag in IGNORED_FLAGS:
            log.warning("[stand-in] TF Serving flag --%s is accepted but ignored by the stand-in", flag)
        else:
            log.warning("[stand-in] unknown flag or argument %r ignored", item)
    from . import config as cfg
    from .errors import INVALID_ARGUMENT, ServingError
    if args.model_config_file:
        if args.model_name or args.model_base_path:
            log.info("[stand-in] --model_config_file is set: --model_name/--model_base_path are ignored "
                     "(as TF Serving ignores them)")
        try:
            proto = cfg.read_config_file(args.model_config_file)
        except ServingError as err:
            _fail_start(err)
        what = f"model config file {args.model_config_file}"
    else:
        name, base = resolve_model(args)
        if not base:
            _fail_start(ServingError(INVALID_ARGUMENT, "Both server_options.model_base_path and "
                                                       "server_options.model_config_file are empty!"))
        log.info("[stand-in] Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
                 name, base)
        proto = cfg.single_model_proto(name, base)
        what = f"model {name}, base path {base}"
    try:  # refuse a bad config before the slow TensorFlow import (nothing is loaded yet)
        checked = cfg.check(proto)
        cfg.label_map(checked.models, lambda _name, _version: None, {},
                      args.allow_version_labels_for_unavailable_models)
    except ServingError as err:
        _fail_start(err)

    t_start = time.monotonic()
    log.info("[stand-in] TF-Serving stand-in of tfs-release (NOT TensorFlow Serving) starting: %s, pid %d",
             what, os.getpid())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf  # noqa: F401 - core TF only; nothing registers extra ops

    from .core import Core, unavailable_message
    from .manager import ModelManager
    from .ops import register_serving_ops
    extra_ops = register_serving_ops()
    log.info("[stand-in] TensorFlow %s imported in %.1f s; op set: core TF%s", tf.__version__,
             time.monotonic() - t_start, "".join(f" + {e}" for e in extra_ops))

    servable_kwargs = dict(tags=[t for t in args.saved_model_tags.split(",") if t],
                           intra_op=args.tensorflow_intra_op_parallelism,
                           inter_op=args.tensorflow_inter_op_parallelism,
                           tensor_content=args.enable_serialization_as_tensor_content)

    def make_manager(model, fast_initial_load):
        return ModelManager(
            model.name, model.base_path, policy=model.policy, poll_seconds=args.file_system_poll_wait_seconds,
            max_load_retries=max(0, args.max_num_load_retries),
            load_retry_interval=max(0, args.load_retry_interval_micros) / 1e6,
            enable_warmup=args.enable_model_warmup, warmup_iterations=max(1, args.num_request_iterations_for_warmup),
            servable_kwargs=servable_kwargs, fast_initial_load=fast_initial_load)

    core = Core(make_manager, stop,
                allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models)
    try:
        managers = core.reload_config(proto, wait=False)
    except ServingError as err:
        _fail_start(err)

    # ServerCore's initial load: the ports open only once every model has a version AVAILABLE
    # (or one failed first: then the server does not start)
    errors = core.wait_until_reached(managers)
    if errors is None:
        log.info("[stand-in] stopped before the models became available")
        _exit(0)
    if errors:
        _fail_start(unavailable_message(errors, "servable(s)"), code_name="UNKNOWN")
    log.info("[stand-in] model(s) %s AVAILABLE %.2f s after start", ", ".join(m.name for m in managers) or "(none)",
             time.monotonic() - t_start)
    # TF Serving parses JSON in C++; here a REST batch of images is hundreds of thousands of Python
    # lists, and every cyclic-GC pass they trigger would also walk TensorFlow's own objects (5-10x
    # the parsing itself). Objects alive now (TF, the loaded model) are left out of those passes.
    import gc
    gc.collect()
    gc.freeze()

    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        threading.Thread(target=poll_config_file, args=(core, args.model_config_file,
                                                        args.model_config_file_poll_wait_seconds, stop),
                         name="config-poll", daemon=True).start()

    from . import grpc_api, rest
    try:
        ssl_config = grpc_api.read_ssl_config(args.ssl_config_file) if args.ssl_config_file else None
        grpc_server, gport = grpc_api.make_server(core, args.host, args.port, args.grpc_max_threads, ssl=ssl_config)
    except (OSError, ValueError) as exc:
        log.error("[stand-in] Failed to start server. Error: %s", exc)
        _exit(255)
    grpc_server.start()
    log.info("[stand-in] Running gRPC ModelServer at %s:%d ...", args.host, gport)
    http = None
    if args.rest_api_port > 0:
        try:
            http = rest.make_server(rest.RestApi(core, args.rest_api_timeout_in_ms), args.host, args.rest_api_port)
        except OSError as exc:
            log.error("[stand-in] Failed to start HTTP Server at %s:%d: %s", args.host, args.rest_api_port, exc)
            grpc_server.stop(0)
            _exit(255)
        rest.serve_in_thread(http)
        log.info("[stand-in] Exporting HTTP/REST API at:%s:%d ...", args.host, args.rest_api_port)

    while not stop.wait(0.5):
        pass
    t0 = time.monotonic()
    if http is not None:
        http.shutdown()
        http.server_close()
    grpc_server.stop(grace=1.0).wait(3)
    for m in core.managers.values():
        m.close()
    log.info("[stand-in] stopped in %.2f s", time.monotonic() - t0)
    _exit(0)
    return 0


def poll_config_file(core, path: str, seconds: int, stop: threading.Event) -> None:
    """Server::PollFilesystemAndReloadConfig every ``seconds``: a file that cannot be read or parsed,
    or a config that ReloadConfig refuses, is logged and the running config stays. The same error
    is logged once (TF Serving logs it at every poll) until it changes or a reload succeeds."""
    from .config import read_config_file
    from .errors import ServingError
    said = None

    def say(text: str, err: ServingError) -> str:
        if text != said:
            if getattr(err, "detail", None):
                log.error("[stand-in] %s", err.detail)
            log.error("[stand-in] %s", text)
        return text

    while not stop.wait(seconds):
        try:
            proto = read_config_file(path)
        except ServingError as err:
            said = say(f"Failed to read ModelServerConfig file: {err.message}", err)
            continue
        if core.same_config(proto):
            said = None
            continue
        log.info("[stand-in] Model config file %s changed: reloading the config", path)
        try:
            core.reload_config(proto)
            said = None
        except ServingError as err:
            said = say(f"PollFilesystemAndReloadConfig failed to ReloadConfig: {err.message}", err)
        except Exception:  # noqa: BLE001 - keep polling whatever happens
            log.exception("[stand-in] reloading the model config file %s failed", path)


def _fail_start(err, code_name: str | None = None) -> None:
    """main.cc: "Failed to start server. Error: <status>" on stdout, exit -1 (255)."""
    text = f"{code_name}: {err}" if code_name else str(err)
    if getattr(err, "detail", None):
        log.error("[stand-in] %s", err.detail)
    log.error("[stand-in] Failed to start server. Error: %s", text)
    print(f"Failed to start server. Error: {text}", flush=True)
    _exit(255)


def _exit(code: int) -> None:
    """Leave without waiting for TensorFlow's or the loader's threads (a load may be in progress)."""
    for h in log.handlers:
        h.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
