"""The edge package format: files, a manifest listing each file's sha256, ed25519 signatures.

A package is a folder: the model file (`model.so`, `model.onnx` or the native model file), the
source model's Cairn manifest (`model-manifest.json`: signature, task), a self-test
(`selftest.json`: held-out rows and the original model's answers) and `edge-manifest.json`, which
lists every other file with its sha256 and size. The edge service signs the manifest's exact bytes
with the fleet's ed25519 key; a device pins the fleet's public key when it registers.

What a device is told to run is a `Directive` (package, its manifest, rollback or not), also
signed by the fleet key, so a rollback cannot be forged by whoever sits between device and server.

Why ed25519 and not TUF: one signer (the edge service) and one trust anchor per fleet, delivered
with the device's credential; TUF's role delegation and metadata expiry add a second, larger
format without a second party to delegate to. Rollback protection is the version check below.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

EDGE_MANIFEST_FILE = "edge-manifest.json"
MODEL_MANIFEST_FILE = "model-manifest.json"
SELFTEST_FILE = "selftest.json"
PackageFormat = Literal["treelite", "onnx", "native"]


class PackageRefused(Exception):
    """A package or directive that must not be installed; `reason` is reported to the server."""

    def __init__(self, reason: str, code: str = "package_refused") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class EdgeManifest(BaseModel):
    """`edge-manifest.json`: what the package is, for which target, and every file's sha256."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    package_name: str
    model_package_group: str
    model_version: int = Field(ge=1)
    build: int = Field(ge=1, description="Packaging run of this model version; orders rebuilds.")
    format: PackageFormat
    target: str
    model_file: str
    framework: str = Field(description="The source model's framework (xgboost, sklearn).")
    tolerance: float = Field(ge=0)
    files: dict[str, FileEntry]
    created_at: datetime

    @property
    def version(self) -> tuple[int, int]:
        """What the rollback check compares: newer model versions, then newer builds."""
        return (self.model_version, self.build)


class Directive(BaseModel):
    """What one device must run: signed by the fleet key (a rollback cannot be forged)."""

    model_config = ConfigDict(extra="forbid")

    fleet_name: str
    device_name: str
    revision: int = Field(ge=0, description="Increases with every change of the device's desire.")
    package_name: str | None = None
    manifest: str | None = Field(default=None, description="The package's edge-manifest.json.")
    manifest_signature: str | None = None
    rollback: bool = False
    plan_name: str | None = None


class SignedDirective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directive: str = Field(description="The Directive's JSON, exactly as signed.")
    signature: str


def canonical_json(document: BaseModel) -> bytes:
    return json.dumps(
        document.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Signing (the edge service) ----------------------------------------------------------------------


def new_signing_key() -> tuple[str, str]:
    """A fresh ed25519 key pair as (private seed, public key), both base64."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    return _b64(seed), _b64(private.public_key().public_bytes_raw())


def sign(private_seed_b64: str, payload: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_seed_b64))
    return _b64(key.sign(payload))


def sign_directive(private_seed_b64: str, directive: Directive) -> SignedDirective:
    text = canonical_json(directive).decode()
    return SignedDirective(directive=text, signature=sign(private_seed_b64, text.encode()))


# Verification (the device) -----------------------------------------------------------------------


def verify_signature(public_key_b64: str, payload: bytes, signature_b64: str, what: str) -> None:
    """`PackageRefused` unless `signature` is the fleet key's signature of `payload`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(base64.b64decode(signature_b64, validate=True), payload)
    except (InvalidSignature, ValueError, binascii.Error):
        raise PackageRefused(
            f"{what}: the signature does not verify with the fleet key", "bad_signature"
        ) from None


def open_directive(public_key_b64: str, signed: SignedDirective) -> Directive:
    verify_signature(public_key_b64, signed.directive.encode(), signed.signature, "directive")
    return Directive.model_validate_json(signed.directive)


def open_manifest(public_key_b64: str, directive: Directive) -> EdgeManifest:
    """The directive's package manifest, once its signature verifies."""
    if directive.manifest is None or directive.manifest_signature is None:
        raise PackageRefused("the directive names a package without a signed manifest")
    raw = directive.manifest.encode()
    verify_signature(public_key_b64, raw, directive.manifest_signature, "edge-manifest.json")
    try:
        manifest = EdgeManifest.model_validate_json(raw)
    except ValidationError as error:
        count = error.error_count()
        raise PackageRefused(f"edge-manifest.json is not valid: {count} errors") from None
    if manifest.package_name != directive.package_name:
        raise PackageRefused("the manifest names another package than the directive")
    return manifest


def verify_files(folder: Path, manifest: EdgeManifest) -> None:
    """Every listed file is there with its size and sha256; nothing is unlisted."""
    for name, entry in manifest.files.items():
        path = folder / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise PackageRefused(f"{name} is missing from the package", "missing_file")
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise PackageRefused(
                f"{name} is {size} bytes; the manifest says {entry.size_bytes} (truncated?)",
                "checksum_mismatch",
            )
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise PackageRefused(
                f"{name}: sha256 {actual[:16]}... does not match the manifest's "
                f"{entry.sha256[:16]}... (tampered or corrupt)",
                "checksum_mismatch",
            )


def check_version(new: EdgeManifest, running: tuple[int, int] | None, *, rollback: bool) -> None:
    """Refuse a package older than what runs (a rollback attack) unless the plan rolls back."""
    if running is None or rollback or new.version >= running:
        return
    raise PackageRefused(
        f"package {new.package_name} is version {new.version}, older than the running "
        f"{running}, and the directive is not a rollback",
        "version_rollback",
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
