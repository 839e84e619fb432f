"""Run by the Airflow env's python (not pytest): drive ``CheckpointTrigger.run()`` (the watcher's
trigger, as the triggerer runs it) against a real S3 server while writing checkpoints like training,
and write what it saw as JSON.

    python checkpoint_trigger_probe.py OUT.json BUCKET PREFIX SERVING_URI

The S3 connection is ``aws_default`` from AIRFLOW_CONN_AWS_DEFAULT. The asset state store is an
in-memory stand-in with the same async get/set as Airflow's accessor (kept across "restarts").
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "plugins")]


class MemoryStore:
    def __init__(self):
        self.data = {}

    async def aget(self, key, default=None):
        return self.data.get(key, default)

    async def aset(self, key, value):
        self.data[key] = value


async def events_within(gen_task_queue: asyncio.Queue, seconds: float) -> list:
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await asyncio.wait_for(gen_task_queue.get(), left))
        except asyncio.TimeoutError:
            break
    return out


def start(trigger) -> tuple[asyncio.Task, asyncio.Queue]:
    q: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for ev in trigger.run():
            await q.put(ev.payload)
    return asyncio.create_task(pump()), q


async def main(out_path, bucket, prefix, serving) -> None:
    from registry.s3 import make_client
    from tfs_release_airflow.checkpoint_watch import CheckpointTrigger
    from tfs_release_airflow.connection import s3_settings
    s3 = s3_settings("aws_default").client()
    ck_uri = f"s3://{bucket}/{prefix}"
    report: dict = {}

    def put(key, body=b"x" * 100):
        s3.put_object(Bucket=bucket, Key=prefix + key, Body=body)

    def trigger(**kw):
        t = CheckpointTrigger("m", ck_uri, serving, poll_s=0.3, **kw)
        t.asset_state_store = store
        return t

    store = MemoryStore()
    t = trigger()
    assert CheckpointTrigger(**t.serialize()[1]).serialize() == t.serialize()
    task, q = start(t)
    put("ckpt-1.index")
    put("ckpt-1.data-00000-of-00002")
    report["while_writing"] = await events_within(q, 1.5)
    put("ckpt-1.data-00001-of-00002")
    report["complete"] = await events_within(q, 3)
    report["after"] = await events_within(q, 1.5)
    task.cancel()
    report["state"] = store.data.get("reported")

    # restart with the state store: nothing again
    task, q = start(trigger())
    report["restart_with_state"] = await events_within(q, 1.5)
    # two checkpoints close together: one event, for the newest
    for n in (2, 3):
        put(f"ckpt-{n}.index")
        put(f"ckpt-{n}.data-00000-of-00001")
    put("checkpoint", b'model_checkpoint_path: "ckpt-3"\n')
    report["two_close"] = await events_within(q, 2)
    task.cancel()

    # restart without state (store lost): ckpt-3 is not published -> reported again
    store = MemoryStore()
    task, q = start(trigger())
    report["restart_without_state"] = await events_within(q, 2)
    task.cancel()

    # storage trouble (a bucket that is not there): logged and retried, the trigger keeps running
    bad = CheckpointTrigger("m", f"s3://no-such-bucket-{os.getpid()}/m/checkpoints/", serving, poll_s=0.3)
    task, q = start(bad)
    report["bad_bucket_events"] = await events_within(q, 2)
    report["bad_bucket_still_running"] = not task.done()
    task.cancel()
    with open(out_path, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
