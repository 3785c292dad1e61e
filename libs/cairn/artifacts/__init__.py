"""Model packages: a manifest (signature, metrics, lineage, sha256 per file) plus model files.

write_model_package   files first, manifest last; returns the package prefix
load_model            verify every checksum, load from safe formats -> LoadedModel
download_package      verify every checksum, write the files to a directory (script packages)
LoadedModel           encode_rows / encode_records / predict / explain
"""

from cairn.artifacts.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    DatasetLineage,
    InputColumn,
    Lineage,
    ModelManifest,
    OutputColumn,
    Signature,
)
from cairn.artifacts.package import (
    SKLEARN_MODEL_FILE,
    TRUSTED_SKLEARN_TYPES,
    XGBOOST_MODEL_FILE,
    ArtifactChecksumMismatch,
    LoadedModel,
    SklearnModel,
    UnsupportedModelPackage,
    XGBoostModel,
    download_package,
    load_model,
    package_prefix,
    read_manifest,
    sha256_hex,
    write_model_package,
)
from cairn.artifacts.signature import SignatureEncoder, SignatureMismatch

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "SKLEARN_MODEL_FILE",
    "TRUSTED_SKLEARN_TYPES",
    "XGBOOST_MODEL_FILE",
    "ArtifactChecksumMismatch",
    "DatasetLineage",
    "InputColumn",
    "Lineage",
    "LoadedModel",
    "ModelManifest",
    "OutputColumn",
    "Signature",
    "SignatureEncoder",
    "SignatureMismatch",
    "SklearnModel",
    "UnsupportedModelPackage",
    "XGBoostModel",
    "download_package",
    "load_model",
    "package_prefix",
    "read_manifest",
    "sha256_hex",
    "write_model_package",
]
