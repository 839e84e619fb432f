"""Against SeaweedFS: parallel ranged downloads verify, resume, and refuse escaping keys."""
import hashlib
import os

import pytest

from registry.errors import BadInput, IntegrityError
from registry.transfer import PART, RemoteFile, download_files, download_prefix, sha256_file, upload_dir

from .conftest import make_saved_model


def test_upload_then_download_roundtrip_multipart(s3, model_env, tmp_path):
    src = make_saved_model(tmp_path / "src", big=3 * PART + 12345)  # several ranged parts
    files = upload_dir(s3, src, model_env.serving, "x/")
    assert {f["path"] for f in files} >= {"saved_model.pb", "variables/variables.data-00000-of-00001"}
    head = s3.head_object(Bucket=model_env.serving, Key="x/saved_model.pb")
    assert head["Metadata"]["sha256"] == sha256_file(os.path.join(src, "saved_model.pb"))[0]
    stats = download_prefix(s3, model_env.serving, "x/", str(tmp_path / "dst"),
                            expected={f["path"]: f["sha256"] for f in files})
    assert stats.files == len(files) and stats.bytes == sum(f["size"] for f in files)
    for f in files:
        assert sha256_file(str(tmp_path / "dst" / f["path"]))[0] == f["sha256"]
    assert not [n for _, _, ns in os.walk(tmp_path / "dst") for n in ns if ".partial" in n]


def test_resume_fetches_only_missing_parts(s3, model_env, tmp_path):
    data = os.urandom(3 * PART + 7)
    etag = s3.put_object(Bucket=model_env.serving, Key="big.bin", Body=data)["ETag"].strip('"')
    dest = str(tmp_path / "big.bin")
    # an earlier, killed download finished parts 0 and 2; part 1 holds garbage
    with open(dest + ".partial", "wb") as fh:
        fh.write(data[:PART] + b"\0" * PART + data[2 * PART:])
    with open(dest + ".partial.parts", "w") as fh:
        fh.write(f"etag {etag}\n0\n2\n")
    rf = RemoteFile("big.bin", dest, len(data), etag, hashlib.sha256(data).hexdigest())
    download_files(s3, model_env.serving, [rf])
    with open(dest, "rb") as fh:
        assert fh.read() == data


def test_resume_state_of_another_object_version_is_discarded(s3, model_env, tmp_path):
    data = os.urandom(PART + 5)
    etag = s3.put_object(Bucket=model_env.serving, Key="o.bin", Body=data)["ETag"].strip('"')
    dest = str(tmp_path / "o.bin")
    with open(dest + ".partial", "wb") as fh:
        fh.write(b"\1" * len(data))
    with open(dest + ".partial.parts", "w") as fh:
        fh.write("etag 0123456789abcdef0123456789abcdef\n0\n1\n")
    download_files(s3, model_env.serving, [RemoteFile("o.bin", dest, len(data), etag)])
    assert open(dest, "rb").read() == data


def test_checksum_mismatch_is_an_error_and_nothing_lands(s3, model_env, tmp_path):
    s3.put_object(Bucket=model_env.serving, Key="f.bin", Body=b"hello")
    dest = str(tmp_path / "f.bin")
    with pytest.raises(IntegrityError, match="sha256"):
        download_files(s3, model_env.serving, [RemoteFile("f.bin", dest, 5, "", "0" * 64)])
    assert not os.path.exists(dest) and not os.path.exists(dest + ".partial")


def test_changed_object_during_download_is_detected(s3, model_env, tmp_path):
    s3.put_object(Bucket=model_env.serving, Key="g.bin", Body=b"v1")
    stale_etag = "0" * 32
    with pytest.raises(IntegrityError, match="changed while it was downloaded"):
        download_files(s3, model_env.serving, [RemoteFile("g.bin", str(tmp_path / "g"), 2, stale_etag)])


def test_download_refuses_keys_escaping_destination(tmp_path):
    from registry.s3 import local_path_for
    with pytest.raises(BadInput, match=r"'\.\.'"):
        local_path_for(str(tmp_path), "../../etc/passwd")
