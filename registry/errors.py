"""Error types shared by every step. The CLI maps them to exit codes in one place (cli.py).

Every message says what was wrong and what to do about it. No message ever contains a credential.
"""


class ReleaseError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class BadInput(ReleaseError):
    """The caller's input or configuration is wrong (exit 2)."""


class ConfigError(BadInput):
    """config/models.yaml (or a file it names) is malformed or lacks a key a command needs."""


class StorageError(BadInput):
    """Object storage refused or cannot serve a request (credentials, bucket, endpoint)."""


class CheckpointError(BadInput):
    """No usable checkpoint: none at all, only incomplete ones, or a malformed one."""


class CandidateError(BadInput):
    """A staged candidate is unusable (e.g. no saved_model.pb)."""


class VersionError(BadInput):
    """A version asked for does not exist or cannot be used."""


class IntegrityError(ReleaseError):
    """Bytes on one side do not match the other (size/checksum). Exit 1: a failed check."""

    exit_code = 1


class CheckFailed(ReleaseError):
    """A check ran and said no (validation verdict, verify found corruption). Exit 1."""

    exit_code = 1
