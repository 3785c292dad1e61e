"""Serving code of the built-in algorithms that are neither XGBoost nor scikit-learn.

Each module here holds what the trainer and every server (gateway, batch, ...) share for one
algorithm: the network built from its JSON config and a `LoadedModel` that predicts with it.
`load_builtin` picks the class by the manifest's algorithm, from the fixed table below, and
checks first that the libraries it needs are installed, naming the extra that brings them.

Package formats (never pickle):
    torch   model.safetensors (tensors only) + architecture.json     -> torch_package
    rrcf    forest.json (each tree as rrcf's nested dict)              -> random_cut_forest
    gensim  vectors.safetensors + vocabulary.json (served with numpy)  -> blazingtext
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping

from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import LoadedModel, UnsupportedModelPackage

# algorithm name -> "module:name" of its LoadedModel class (or a function of the manifest and
# files returning one). A name not here is not served.
SERVED: dict[str, str] = {
    "random-cut-forest": "cairn.builtins.random_cut_forest:RandomCutForestModel",
    "ip-insights": "cairn.builtins.ip_insights:IPInsightsModel",
    "factorization-machines": "cairn.builtins.factorization_machines:FactorizationMachinesModel",
    "ntm": "cairn.builtins.ntm:NeuralTopicModel",
    "blazingtext": "cairn.builtins.blazingtext:load",
    "object2vec": "cairn.builtins.object2vec:Object2VecModel",
    "deepar": "cairn.builtins.deepar:DeepARModel",
    "seq2seq": "cairn.builtins.seq2seq:Seq2SeqModel",
    "image-classification": "cairn.builtins.image_classification:ImageClassificationModel",
    "object-detection": "cairn.builtins.object_detection:ObjectDetectionModel",
    "semantic-segmentation": "cairn.builtins.semantic_segmentation:SemanticSegmentationModel",
    "reinforcement-learning": "cairn.builtins.reinforcement_learning:ReinforcementLearningModel",
}

# framework -> (modules it needs at serving time, the extra that installs them)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("torch", "safetensors"), "deep"),
    "rrcf": (("rrcf",), "serving"),
    "gensim": (("safetensors",), "serving"),
}


def missing_extra(modules: tuple[str, ...], extra: str, what: str) -> str | None:
    """Why `what` cannot run here (naming the extra), or None when every module imports."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"{what} needs {', '.join(missing)}, which this install lacks: "
        f"pip install 'cairn[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
    )


def load_builtin(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> LoadedModel:
    """The served model of a built-in package; UnsupportedModelPackage says what is missing."""
    target = SERVED.get(manifest.algorithm)
    if target is None:
        raise UnsupportedModelPackage(
            f"{manifest.framework} package of algorithm {manifest.algorithm!r} cannot be served",
            framework=manifest.framework,
        )
    modules, extra = NEEDS.get(manifest.framework, ((), ""))
    why = missing_extra(modules, extra, f"serving {manifest.algorithm}")
    if why is not None:
        raise UnsupportedModelPackage(why, extra=extra)
    module_name, attribute = target.split(":")
    served: Callable[[ModelManifest, Mapping[str, bytes]], LoadedModel] = getattr(
        importlib.import_module(module_name), attribute
    )
    return served(manifest, blobs)
