"""The canary model config entry follows TF Serving's label rules, step by step (hand-computed)."""
from registry.serving_config import canary_entry, render


def step(state, local, available, previous):
    return canary_entry(state, set(local), set(available), previous)


def test_first_version_is_stable_at_once():
    assert step({"stable": 1, "canary": None}, [1], [], None) == {"versions": [1], "labels": {"stable": 1}}


def test_a_new_canary_is_loaded_first_and_labelled_once_tf_serving_has_it():
    prev = {"versions": [1], "labels": {"stable": 1}}
    s = {"stable": 1, "canary": 2}
    assert step(s, [1], [1], prev) == {"versions": [1], "labels": {"stable": 1}}          # 2 not synced yet
    one = step(s, [1, 2], [1], prev)
    assert one == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}   # a new label: allowed by the flag
    assert step(s, [1, 2], [1, 2], one) == one                                 # stable state: no change


def test_moving_the_canary_label_waits_until_the_new_version_is_loaded():
    prev = {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}
    s = {"stable": 1, "canary": 3}  # 3 supersedes 2
    a = step(s, [1, 2, 3], [1, 2], prev)
    assert a == {"versions": [1, 2, 3], "labels": {"canary": 2, "stable": 1}}  # load 3 beside; label stays on 2
    b = step(s, [1, 2, 3], [1, 2, 3], a)
    assert b == {"versions": [1, 3], "labels": {"canary": 3, "stable": 1}}     # moved; 2 unloaded


def test_promote_moves_stable_to_the_loaded_canary_and_drops_the_old_one():
    prev = {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}
    assert step({"stable": 2, "canary": None}, [1, 2], [1, 2], prev) == {"versions": [2], "labels": {"stable": 2}}


def test_abort_drops_the_canary():
    prev = {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}
    assert step({"stable": 1, "canary": None}, [1, 2], [1, 2], prev) == {"versions": [1], "labels": {"stable": 1}}


def test_labels_never_name_a_version_that_is_not_synced():
    prev = {"versions": [1], "labels": {"stable": 1}}
    e = step({"stable": 5, "canary": None}, [1], [1], prev)  # this replica has not synced 5 yet
    assert e == {"versions": [1], "labels": {"stable": 1}}
    assert all(v in e["versions"] for v in e["labels"].values())


def test_no_label_state_yet_serves_the_newest_synced():
    assert step({"stable": None, "canary": None}, [3, 4], [], None) == {"versions": [4], "labels": {}}


def test_render_lists_every_model_with_its_policy_and_labels():
    text = render([{"name": "a", "base_path": "/models/a", "rollout": "all"},
                   {"name": "b", "base_path": "/models/b", "rollout": "canary", "versions": [1, 2],
                    "labels": {"canary": 2, "stable": 1}}])
    assert text == """model_config_list {
  config {
    name: "a"
    base_path: "/models/a"
    model_platform: "tensorflow"
    model_version_policy {
      latest {
        num_versions: 1
      }
    }
  }
  config {
    name: "b"
    base_path: "/models/b"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: "canary"
      value: 2
    }
    version_labels {
      key: "stable"
      value: 1
    }
  }
}
"""


def test_rendered_config_parses_as_tf_servings_proto():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    cfg = text_format.Parse(render([{"name": "b", "base_path": "/m/b", "rollout": "canary", "versions": [1, 2],
                                     "labels": {"stable": 1, "canary": 2}}]), model_server_config_pb2.ModelServerConfig())
    c = cfg.model_config_list.config[0]
    assert list(c.model_version_policy.specific.versions) == [1, 2] and dict(c.version_labels) == {"stable": 1, "canary": 2}
