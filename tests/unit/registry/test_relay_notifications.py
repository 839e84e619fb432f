"""registry/checkpoint_relay.py without a store: which objects a notification names (SeaweedFS's
filer webhook, S3 event notifications, SNS, EventBridge), and how models group into locations."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from registry.checkpoint_relay import NotificationError, locations, notified_keys
from registry.s3 import S3Uri

SEAWEED = {"event_type": "create", "key": "/buckets/training/m1/checkpoints/checkpoint",
           "message": {"new_entry": {"name": "checkpoint"}, "new_parent_path": "/buckets/training/m1/checkpoints"}}
RECORDS = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "training"},
                                                                 "object": {"key": "m1/checkpoints/ckpt%2D5.index"}}},
                       {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "training"},
                                                                 "object": {"key": "a+b/ckpt-1.index"}}}]}
EVENTBRIDGE = {"detail-type": "Object Created", "source": "aws.s3",
               "detail": {"bucket": {"name": "training"}, "object": {"key": "m2/checkpoints/checkpoint"}}}


@pytest.mark.parametrize("body, keys", [
    (SEAWEED, [("training", "m1/checkpoints/checkpoint")]),
    ({"event_type": "rename", "key": "/buckets/training/tmp/x",
      "message": {"new_entry": {"name": "checkpoint"}, "new_parent_path": "/buckets/training/m1/checkpoints"}},
     [("training", "tmp/x"), ("training", "m1/checkpoints/checkpoint")]),
    ({"event_type": "create", "key": "/buckets/training", "message": {}}, []),   # the bucket itself
    ({"event_type": "create", "key": "/etc/iam/identity.json", "message": {}}, []),  # not under /buckets
    (RECORDS, [("training", "m1/checkpoints/ckpt-5.index"), ("training", "a b/ckpt-1.index")]),
    ({"Type": "Notification", "Message": json.dumps(RECORDS)},
     [("training", "m1/checkpoints/ckpt-5.index"), ("training", "a b/ckpt-1.index")]),
    ({"Records": []}, []),  # S3's test event has no Records, an empty list names nothing
    (EVENTBRIDGE, [("training", "m2/checkpoints/checkpoint")]),
])
def test_which_objects_a_notification_names(body, keys):
    assert notified_keys(body) == keys


@pytest.mark.parametrize("body, message", [
    ([1, 2], "a notification is a JSON object"),
    ({"hello": "world"}, "not a notification the relay reads"),
    ({"Type": "Notification", "Message": "{oops"}, "an SNS Notification whose Message is not JSON"),
])
def test_an_unreadable_notification_says_what_is_accepted(body, message):
    with pytest.raises(NotificationError, match=message):
        notified_keys(body)


def test_models_group_into_one_location_per_bucket_at_their_common_folder():
    ms = [SimpleNamespace(name=n, checkpoints=S3Uri.parse(u), serving=S3Uri.parse("s3://serving/x/"))
          for n, u in [("a", "s3://training/team-a/a/checkpoints/"), ("b", "s3://training/team-a/b/checkpoints/"),
                       ("c", "s3://training/team-b/c/ckpt/"), ("d", "s3://other/d/checkpoints/")]]
    from registry.checkpoint_relay import Watched
    ws = [Watched(m.name, m.checkpoints, m.serving, "") for m in ms]
    got = [(loc.bucket, loc.prefix, [w.name for w in loc.models]) for loc in locations(ws)]
    # team-a/ and team-b/ share only "team-" : the common folder is the bucket's root
    assert got == [("other", "d/checkpoints/", ["d"]), ("training", "", ["a", "b", "c"])]
    ws2 = ws[:2]
    assert [(loc.bucket, loc.prefix) for loc in locations(ws2)] == [("training", "team-a/")]
