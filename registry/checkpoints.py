"""Find the newest *complete* TensorFlow checkpoint under a training prefix.

A checkpoint ``ckpt-N`` is complete when ``ckpt-N.index`` and every data shard
``ckpt-N.data-XXXXX-of-YYYYY`` (XXXXX = 0..YYYYY-1) exist and are non-empty. The ``checkpoint``
state file's ``model_checkpoint_path`` wins when it names a complete one; otherwise the highest
complete N. Incomplete checkpoints are listed with a reason and skipped.
"""
from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field

from registry.errors import CheckpointError
from registry.s3 import S3Uri, check_key, check_bucket, get_bytes, list_objects

log = logging.getLogger(__name__)

_DATA = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<total>\d{5})$")
_INDEX = re.compile(r"^(?P<prefix>.+)\.index$")
_STEP = re.compile(r"-(\d+)$")
_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"(.*)"\s*$')


@dataclass
class Checkpoint:
    name: str                 # e.g. "ckpt-12" (the prefix, relative to the checkpoints folder)
    uri: str                  # s3://bucket/prefix/ckpt-12 (the checkpoint path TF expects)
    step: int | None
    complete: bool = False
    reason: str | None = None
    files: list[dict] = field(default_factory=list)  # {key, size, etag}
    in_state_file: bool = False

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files)

    def to_json(self) -> dict:
        d = {"name": self.name, "uri": self.uri, "step": self.step, "complete": self.complete,
             "bytes": self.size, "files": len(self.files)}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class Listing:
    checkpoints: list[Checkpoint]
    newest: Checkpoint | None
    state_file_entry: str | None
    params_key: str | None     # key of params.yaml when training wrote one

    def to_json(self) -> dict:
        return {
            "newest": {"uri": self.newest.uri, "step": self.newest.step, "name": self.newest.name}
            if self.newest else None,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "state_file": self.state_file_entry,
        }


def parse_state_file(text: str) -> tuple[str | None, list[str]]:
    """(model_checkpoint_path, all_model_checkpoint_paths) from the text-proto state file."""
    latest, all_paths = None, []
    for line in text.splitlines():
        m = _STATE_LINE.match(line)
        if not m:
            continue
        value = posixpath.basename(m.group(2).replace("\\", "/"))
        if m.group(1) == "model_checkpoint_path":
            latest = value
        else:
            all_paths.append(value)
    return latest, all_paths


def _step(name: str) -> int | None:
    m = _STEP.search(name)
    return int(m.group(1)) if m else None


def list_checkpoints(client, location: S3Uri) -> Listing:
    """Every checkpoint under ``location`` with completeness and reason, newest complete marked."""
    check_bucket(client, location.bucket)
    groups: dict[str, dict] = {}
    state_text = None
    params_key = None
    for obj in list_objects(client, location.bucket, location.prefix, delimiter="/"):
        key = obj["Key"]
        rel = key[len(location.prefix):]
        if not rel or "/" in rel:
            continue
        check_key(key)
        if rel == "checkpoint":
            state_text = (get_bytes(client, location.bucket, key) or b"").decode("utf-8", "replace")
            continue
        if rel in ("params.yaml", "params.yml"):
            params_key = key
            continue
        info = {"key": key, "size": obj["Size"], "etag": obj.get("ETag", "").strip('"')}
        m = _INDEX.match(rel)
        if m:
            groups.setdefault(m.group("prefix"), {"index": None, "shards": {}})["index"] = info
            continue
        m = _DATA.match(rel)
        if m:
            g = groups.setdefault(m.group("prefix"), {"index": None, "shards": {}})
            g["shards"][int(m.group("shard"))] = (int(m.group("total")), info)

    checkpoints = []
    for name, g in groups.items():
        ck = Checkpoint(name=name, uri=f"s3://{location.bucket}/{location.prefix}{name}", step=_step(name))
        ck.files = ([g["index"]] if g["index"] else []) + [info for _, info in g["shards"].values()]
        ck.reason = _incomplete_reason(g)
        ck.complete = ck.reason is None
        checkpoints.append(ck)
    checkpoints.sort(key=lambda c: (c.step if c.step is not None else -1, c.name))

    latest, all_paths = parse_state_file(state_text) if state_text is not None else (None, [])
    by_name = {c.name: c for c in checkpoints}
    for n in all_paths + ([latest] if latest else []):
        if n in by_name:
            by_name[n].in_state_file = True

    newest = None
    if latest and latest in by_name and by_name[latest].complete:
        newest = by_name[latest]
    else:
        if latest:
            why = by_name[latest].reason if latest in by_name else "none of its files exist"
            log.warning("state file names %s but it is not usable (%s); falling back to the highest "
                        "complete checkpoint", latest, why)
        complete = [c for c in checkpoints if c.complete and c.step is not None]
        newest = complete[-1] if complete else None
    for c in checkpoints:
        if not c.complete:
            log.info("skipping checkpoint %s: %s", c.name, c.reason)
    return Listing(checkpoints=checkpoints, newest=newest, state_file_entry=latest, params_key=params_key)


def _incomplete_reason(g: dict) -> str | None:
    if g["index"] is None:
        return "no .index file (data shards without an index: the save was interrupted or pruned)"
    if g["index"]["size"] == 0:
        return "the .index file is empty"
    shards = g["shards"]
    if not shards:
        return "no data shards (.data-XXXXX-of-YYYYY) next to the index"
    totals = {total for total, _ in shards.values()}
    if len(totals) != 1:
        return f"data shards disagree on the shard count ({sorted(totals)})"
    total = totals.pop()
    missing = [i for i in range(total) if i not in shards]
    if missing:
        return f"missing data shard(s) {missing} of {total}"
    empty = [i for i, (_, info) in shards.items() if info["size"] == 0]
    if empty:
        return f"empty data shard(s) {empty}"
    return None


def newest_complete(client, location: S3Uri) -> Checkpoint:
    listing = list_checkpoints(client, location)
    if listing.newest is None:
        if not listing.checkpoints:
            raise CheckpointError(f"no checkpoints under {location}: expected ckpt-N.index and "
                                  "ckpt-N.data-* files written by training. Check the 'checkpoints' URI.")
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in listing.checkpoints)
        raise CheckpointError(f"no complete checkpoint under {location} ({reasons}). Wait for training "
                              "to finish writing one, or re-upload the missing files.")
    return listing.newest


def check_inside(location: S3Uri, uri: str) -> S3Uri:
    """``uri`` parsed, when it names a checkpoint inside ``location`` (the model's own checkpoints
    prefix, sub-folders included); raises CheckpointError otherwise. A trigger parameter or a
    ``--checkpoint`` flag can never make a release export another model's (or bucket's) weights."""
    target = S3Uri.parse(uri, folder=False)
    inside = (target.bucket == location.bucket and target.prefix.startswith(location.prefix)
              and len(target.prefix) > len(location.prefix) and not target.prefix.endswith("/"))
    if not inside:
        raise CheckpointError(f"checkpoint {uri} is not inside this model's checkpoints prefix {location}: "
                              f"name a checkpoint under it (e.g. {location}ckpt-N), or leave it empty "
                              "for the newest complete one.")
    return target


def resolve(client, location: S3Uri, uri: str | None) -> tuple[Checkpoint, Listing]:
    """The checkpoint ``uri`` names (inside ``location``, complete), or the newest complete one."""
    if uri is not None:
        target = check_inside(location, uri)  # before any listing: refused without touching storage
    listing = list_checkpoints(client, location)
    if uri is None:
        return newest_complete(client, location), listing
    parent = posixpath.dirname(target.prefix)
    parent = parent + "/" if parent else ""
    name = posixpath.basename(target.prefix)
    if parent != location.prefix:  # a sub-folder of the checkpoints prefix
        listing = list_checkpoints(client, S3Uri(target.bucket, parent))
    for c in listing.checkpoints:
        if c.name == name:
            if not c.complete:
                raise CheckpointError(f"checkpoint {uri} is incomplete: {c.reason}.")
            return c, listing
    raise CheckpointError(f"checkpoint {uri} does not exist (no {name}.index / data shards there).")
