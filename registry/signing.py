"""Signed versions: the release pipeline signs what it publishes; sync sidecars serve only what a
trusted key signed (the OpenSSF model-signing format, its ``model-signing`` library, ECDSA keys).

What is signed, for version N of a model: a model-signing manifest (an in-toto statement in a
DSSE envelope, in a Sigstore bundle) whose resources are
- every file of ``<N>/`` with its sha256, exactly the manifest's ``files`` (the digests the
  candidate was validated with: staging computed them, the verdict is keyed on them), and
- ``../_manifests/<N>.json`` (the manifest's path from ``<N>/``) with the sha256 of the manifest's
  exact bytes: the model, the version number, the verdict and its report, the regression summary,
  who approved, the checkpoint and the candidate digest.
So a verdict can never be moved onto other bytes, nor a signed version replayed under another
number or model. The subject's name is ``<model>/<N>``.

The bundle is ``_signatures/<N>.sig`` beside the manifests (TF Serving loads numeric folders only),
written before the manifest commits and never overwritten. Publishing copies objects server-side,
so nothing is hashed again to sign: signing costs one ECDSA signature per version. A replica checks
the signature against its trusted public keys before it downloads, and every downloaded byte
against the signed digests (registry/transfer.py hashes while it downloads) before the rename.

Keys: PEM files (``tfs-release keygen``). A key's id is the sha256 of its public key (PEM,
SubjectPublicKeyInfo), as model-signing records it in the bundle's ``publicKey.hint``.
- signing (publish, rollback copies): ``--signing-key FILE``, or ``TFS_RELEASE_SIGNING_KEY_FILE``,
  or ``TFS_RELEASE_SIGNING_KEY`` (the PEM itself: how an Airflow task hands the key from its
  connection to the one step that publishes); ``TFS_RELEASE_SIGNING_KEY_PASSWORD`` for an
  encrypted key. Never logged.
- verifying (sync, sync-all, verify, rollback's source): ``--trusted-key FILE`` (repeatable), or
  ``TFS_RELEASE_TRUSTED_KEYS`` (files, ``:``-separated). Several keys: rotation.

No Airflow here; the library is imported on first use (``tfs-release --help`` needs none of it).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass

from registry.errors import BadInput, IntegrityError

KEY_ENV = "TFS_RELEASE_SIGNING_KEY"
KEY_FILE_ENV = "TFS_RELEASE_SIGNING_KEY_FILE"
KEY_PASSWORD_ENV = "TFS_RELEASE_SIGNING_KEY_PASSWORD"
TRUSTED_ENV = "TFS_RELEASE_TRUSTED_KEYS"
FORMAT = "openssf-model-signing/v1.0 (ECDSA key)"


class SignatureError(IntegrityError):
    """A version's signature is missing, does not verify, names an untrusted key, or does not cover
    exactly this version's files and manifest. Exit 1: a replica does not serve it."""


def key_id(public_key) -> str:
    """The key's id as model-signing records it: sha256 of the public key's PEM (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization
    pem = public_key.public_bytes(encoding=serialization.Encoding.PEM,
                                  format=serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def short(kid: str | None) -> str:
    return (kid or "?")[:12]


def manifest_item_name(n: int) -> str:
    """The manifest's resource name in the signed statement: its path from ``<N>/``."""
    return f"../_manifests/{n}.json"


def _statement(model: str, n: int, files: list[dict], manifest_raw: bytes):
    from model_signing import manifest as ms_manifest
    from model_signing._hashing import hashing
    from model_signing._signing import signing as ms_signing
    items = [ms_manifest.FileManifestItem(path=pathlib.PurePosixPath(f["path"]),
                                          digest=hashing.Digest("sha256", bytes.fromhex(f["sha256"])))
             for f in files]
    items.append(ms_manifest.FileManifestItem(
        path=pathlib.PurePosixPath(manifest_item_name(n)),
        digest=hashing.Digest("sha256", hashlib.sha256(manifest_raw).digest())))
    serialization = ms_manifest._FileSerialization("sha256", allow_symlinks=False)
    return ms_signing.Payload(ms_manifest.Manifest(f"{model}/{n}", items, serialization))


@dataclass
class SigningKey:
    """An ECDSA private key (P-256/384/521) that signs versions."""
    private_key: object
    source: str  # where it came from, for messages (never the key itself)

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str, password: str | None = None) -> "SigningKey":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        try:
            key = serialization.load_pem_private_key(pem, password.encode() if password else None)
        except TypeError as exc:  # encrypted without a password, or a password for a plain key
            raise BadInput(f"the signing key from {source} cannot be read: {exc}. Set "
                           f"{KEY_PASSWORD_ENV} for an encrypted key.") from None
        except ValueError:
            raise BadInput(f"the signing key from {source} is not a PEM private key (or its password is "
                           "wrong). Make one with `tfs-release keygen`.") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in (
                "secp256r1", "secp384r1", "secp521r1"):
            raise BadInput(f"the signing key from {source} is not an ECDSA P-256/P-384/P-521 key, which is what "
                           "model-signing's key signing takes. Make one with `tfs-release keygen`.")
        return cls(key, source)

    @classmethod
    def from_file(cls, path: str, password: str | None = None) -> "SigningKey":
        try:
            with open(path, "rb") as fh:
                pem = fh.read()
        except OSError as exc:
            raise BadInput(f"cannot read the signing key {path}: {exc.strerror}") from None
        return cls.from_pem(pem, source=path, password=password)

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return self.private_key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, model: str, n: int, files: list[dict], manifest_raw: bytes) -> bytes:
        """The Sigstore bundle (JSON bytes) over version N's files and manifest."""
        from model_signing._signing import sign_ec_key

        class _Signer(sign_ec_key.Signer):  # model-signing's signer, with a key already in memory
            def __init__(self, private_key):
                self._private_key = private_key

        sig = _Signer(self.private_key).sign(_statement(model, n, files, manifest_raw))
        return sig.bundle.to_json().encode()


def signing_key(path: str | None = None, env: dict | None = None) -> SigningKey | None:
    """The key to sign with: ``path`` (--signing-key), else TFS_RELEASE_SIGNING_KEY_FILE, else the
    PEM in TFS_RELEASE_SIGNING_KEY; None when none is given (versions are published unsigned)."""
    env = os.environ if env is None else env
    password = env.get(KEY_PASSWORD_ENV) or None
    if path or env.get(KEY_FILE_ENV):
        return SigningKey.from_file(path or env[KEY_FILE_ENV], password)
    if env.get(KEY_ENV):
        return SigningKey.from_pem(env[KEY_ENV].encode(), source=f"${KEY_ENV}", password=password)
    return None


@dataclass
class Verified:
    key_id: str
    key_source: str


class TrustedKeys:
    """The public keys a replica (or verify, or a rollback's source check) trusts."""

    def __init__(self, keys: dict[str, tuple[object, str]]):
        self.keys = keys  # key id -> (public key, where it came from)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def describe(self) -> str:
        return ", ".join(f"{short(k)} ({src})" for k, (_, src) in sorted(self.keys.items()))

    @classmethod
    def from_files(cls, paths) -> "TrustedKeys":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        keys = {}
        for path in paths:
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise BadInput(f"cannot read the trusted key {path}: {exc.strerror}") from None
            try:
                pub = serialization.load_pem_public_key(raw)
            except ValueError:
                raise BadInput(f"the trusted key {path} is not a PEM public key (a private key? give the "
                               "public half: `tfs-release keygen` writes both).") from None
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                raise BadInput(f"the trusted key {path} is not an ECDSA public key")
            keys[key_id(pub)] = (pub, path)
        return cls(keys)

    def with_key(self, key: SigningKey) -> "TrustedKeys":
        """These keys and the public half of ``key`` (a publisher trusts its own key)."""
        pub = key.private_key.public_key()
        return TrustedKeys({**self.keys, key_id(pub): (pub, f"the signing key {key.source}")})

    def verify(self, raw_sig: bytes | None, *, model: str | None, n: int, files: list[dict],
               manifest_raw: bytes, where: str) -> Verified:
        """Check ``raw_sig`` (the bundle) covers exactly this version's files and manifest bytes and
        was made by a trusted key; raise SignatureError saying which of those failed."""
        if raw_sig is None:
            raise SignatureError(f"version {n} is not signed (no {where}): it was not published by the "
                                 "release pipeline with a signing key. Not served; publish it through the "
                                 "pipeline (or roll back to a signed version).")
        from model_signing._signing import sign_ec_key
        try:
            parsed = json.loads(raw_sig)
            bundle = _read_bundle(parsed)
            hint = bundle.bundle.verification_material.public_key.hint
        except Exception as exc:  # noqa: BLE001 - any malformed bundle is the same refusal
            raise SignatureError(f"version {n}: {where} is not a model-signing bundle ({exc}). Not served.") from None
        if not hint or hint not in self.keys:
            raise SignatureError(f"version {n} is signed by key {short(hint)}, which this replica does not trust "
                                 f"(trusted: {self.describe()}). Not served; add the key's public half to "
                                 "the trusted keys if it is yours (rotation), else find out who wrote it.")
        pub, src = self.keys[hint]

        class _Verifier(sign_ec_key.Verifier):
            def __init__(self, public_key):
                self._public_key = public_key

        try:
            signed = _Verifier(pub).verify(bundle)
        except Exception as exc:  # noqa: BLE001 - cryptography's InvalidSignature, ValueError, ...
            raise SignatureError(f"version {n}: the signature in {where} does not verify with key {short(hint)} "
                                 f"({type(exc).__name__}: {exc or 'bad signature'}). Not served.") from None
        got = {d.identifier: d.digest.digest_hex for d in signed.resource_descriptors()}
        exp = {**{f["path"]: f["sha256"] for f in files},
               manifest_item_name(n): hashlib.sha256(manifest_raw).hexdigest()}
        if got != exp:
            name = manifest_item_name(n)
            if got.get(name) != exp.get(name):
                what = ("the manifest differs from the one that was signed (its verdict, version or files "
                        "were changed after signing, or the signature belongs to another version)")
            else:
                changed = sorted(set(got) ^ set(exp) | {k for k in set(got) & set(exp) if got[k] != exp[k]})
                what = f"the files differ from the signed ones ({', '.join(changed[:5])})"
            raise SignatureError(f"version {n}: {what}. Not served.")
        if model is not None and signed.model_name != f"{model}/{n}":
            raise SignatureError(f"version {n}: the signature is for {signed.model_name!r}, not {model}/{n}. Not served.")
        return Verified(key_id=hint, key_source=src)


def _read_bundle(parsed: dict):
    """model-signing's Signature.read, from a dict instead of a file (same adjustments)."""
    from model_signing._signing import sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb
    vm = parsed["verificationMaterial"]
    vm.setdefault("tlogEntries", [])
    if "publicKey" in vm:
        vm["publicKey"].setdefault("hint", None)
        for k in ("rawBytes", "keyDetails"):
            vm["publicKey"].pop(k, None)
    return sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))


def trusted_keys(paths: list[str] | None = None, env: dict | None = None) -> TrustedKeys:
    """``paths`` (--trusted-key ...), else the files in TFS_RELEASE_TRUSTED_KEYS; may be empty."""
    env = os.environ if env is None else env
    if not paths:
        paths = [p for p in (env.get(TRUSTED_ENV) or "").split(":") if p]
    return TrustedKeys.from_files(paths)


def keygen(private_path: str, public_path: str | None = None, *, exist_ok: bool = False) -> tuple[str, str, str]:
    """A new P-256 key pair: the private key (mode 0600) and its public half; (private, public, key id).
    With ``exist_ok`` an existing pair is kept and returned."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    public_path = public_path or (private_path[:-4] if private_path.endswith(".pem") else private_path) + ".pub.pem"
    if os.path.exists(private_path):
        if not exist_ok:
            raise BadInput(f"{private_path} exists: not overwritten (a lost signing key cannot be recovered). "
                           "Choose another path.")
        key = SigningKey.from_file(private_path)
        if not os.path.exists(public_path):
            _write(public_path, key.public_pem(), 0o644)
        return private_path, public_path, key.key_id
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
                            encryption_algorithm=serialization.NoEncryption())
    os.makedirs(os.path.dirname(os.path.abspath(private_path)), exist_ok=True)
    _write(private_path, pem, 0o600)
    sk = SigningKey(key, private_path)
    _write(public_path, sk.public_pem(), 0o644)
    return private_path, public_path, sk.key_id


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
