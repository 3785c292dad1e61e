"""The signed edge package: a device installs only what the fleet key signed, byte for byte, and
never an older version unless the signed directive is a rollback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cairn_edge.package import (
    Directive,
    EdgeManifest,
    FileEntry,
    PackageRefused,
    check_version,
    new_signing_key,
    open_directive,
    open_manifest,
    sha256_file,
    sign,
    sign_directive,
    verify_files,
)


def package(folder: Path, version: int = 2, build: int = 1) -> EdgeManifest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.so").write_bytes(bytes(range(256)) * 40)
    (folder / "selftest.json").write_text(json.dumps({"rows": [], "expected": []}))
    files = {
        f.name: FileEntry(sha256=sha256_file(f), size_bytes=f.stat().st_size)
        for f in folder.iterdir()
    }
    return EdgeManifest(
        package_name=f"m-v{version}-{build}",
        model_package_group="m",
        model_version=version,
        build=build,
        format="treelite",
        target="linux-x86_64",
        model_file="model.so",
        framework="xgboost",
        tolerance=1e-4,
        files=files,
        created_at=datetime.now(UTC),
    )


def directive(seed: str, manifest: EdgeManifest, **overrides: object) -> Directive:
    text = manifest.model_dump_json()
    fields: dict[str, object] = {
        "fleet_name": "f",
        "device_name": "d1",
        "revision": 3,
        "package_name": manifest.package_name,
        "manifest": text,
        "manifest_signature": sign(seed, text.encode()),
    }
    return Directive(**(fields | overrides))  # type: ignore[arg-type]


def test_a_signed_package_verifies_and_its_manifest_opens(tmp_path: Path) -> None:
    seed, public = new_signing_key()
    manifest = package(tmp_path / "p")
    signed = sign_directive(seed, directive(seed, manifest))
    opened = open_directive(public, signed)
    assert open_manifest(public, opened) == manifest
    verify_files(tmp_path / "p", manifest)


def test_a_flipped_byte_is_refused_as_a_checksum_mismatch(tmp_path: Path) -> None:
    manifest = package(tmp_path / "p")
    path = tmp_path / "p" / "model.so"
    data = bytearray(path.read_bytes())
    data[1234] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PackageRefused) as refused:
        verify_files(tmp_path / "p", manifest)
    assert refused.value.code == "checksum_mismatch"
    assert "tampered" in refused.value.reason


def test_a_truncated_file_is_refused_naming_its_size(tmp_path: Path) -> None:
    manifest = package(tmp_path / "p")
    path = tmp_path / "p" / "model.so"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PackageRefused, match="truncated"):
        verify_files(tmp_path / "p", manifest)


def test_a_manifest_signed_by_another_fleet_is_refused(tmp_path: Path) -> None:
    seed, _ = new_signing_key()
    _, other_public = new_signing_key()
    manifest = package(tmp_path / "p")
    with pytest.raises(PackageRefused) as refused:
        open_manifest(other_public, directive(seed, manifest))
    assert refused.value.code == "bad_signature"


def test_an_edited_manifest_no_longer_verifies(tmp_path: Path) -> None:
    seed, public = new_signing_key()
    manifest = package(tmp_path / "p")
    forged = directive(seed, manifest)
    forged.manifest = (forged.manifest or "").replace('"tolerance":0.0001', '"tolerance":1.0')
    with pytest.raises(PackageRefused, match="signature"):
        open_manifest(public, forged)


def test_a_forged_rollback_flag_breaks_the_directive_signature(tmp_path: Path) -> None:
    seed, public = new_signing_key()
    signed = sign_directive(seed, directive(seed, package(tmp_path / "p")))
    tampered = signed.model_copy(
        update={"directive": signed.directive.replace('"rollback":false', '"rollback":true')}
    )
    with pytest.raises(PackageRefused, match="signature"):
        open_directive(public, tampered)


def test_an_older_version_is_refused_unless_the_plan_rolls_back(tmp_path: Path) -> None:
    older = package(tmp_path / "p", version=1, build=5)
    with pytest.raises(PackageRefused) as refused:
        check_version(older, (2, 1), rollback=False)
    assert refused.value.code == "version_rollback"
    check_version(older, (2, 1), rollback=True)
    check_version(package(tmp_path / "q", version=2, build=2), (2, 1), rollback=False)
    check_version(older, None, rollback=False)
