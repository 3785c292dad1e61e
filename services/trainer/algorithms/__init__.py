"""Built-in training algorithms, one module each; `ALGORITHMS` maps a job's name to one."""

from __future__ import annotations

from typing import Any

from cairn.errors import InvalidInput

from services.trainer.algorithms.base import (
    Algorithm,
    InvalidHyperparameters,
    RuntimeExceeded,
    TrainedModel,
    TrainingContext,
    TrainingStopped,
)
from services.trainer.algorithms.blazingtext import BlazingText
from services.trainer.algorithms.deepar import DeepAR
from services.trainer.algorithms.factorization_machines import FactorizationMachines
from services.trainer.algorithms.image_classification import ImageClassification
from services.trainer.algorithms.ip_insights import IPInsights
from services.trainer.algorithms.isolation_forest import IsolationForestAlgorithm
from services.trainer.algorithms.kmeans import KMeansAlgorithm
from services.trainer.algorithms.knn import KNNAlgorithm
from services.trainer.algorithms.lda import LDAAlgorithm
from services.trainer.algorithms.linear_learner import LinearLearner
from services.trainer.algorithms.ntm import NeuralTopicModel
from services.trainer.algorithms.object2vec import Object2Vec
from services.trainer.algorithms.object_detection import ObjectDetection
from services.trainer.algorithms.pca import PCAAlgorithm
from services.trainer.algorithms.random_cut_forest import RandomCutForest
from services.trainer.algorithms.reinforcement_learning import ReinforcementLearning
from services.trainer.algorithms.semantic_segmentation import SemanticSegmentation
from services.trainer.algorithms.seq2seq import Seq2Seq
from services.trainer.algorithms.xgboost_algo import XGBoostAlgorithm

ALGORITHMS: dict[str, Algorithm[Any]] = {
    algorithm.name: algorithm
    for algorithm in (
        XGBoostAlgorithm(),
        LinearLearner(),
        KMeansAlgorithm(),
        PCAAlgorithm(),
        KNNAlgorithm(),
        RandomCutForest(),
        IsolationForestAlgorithm(),
        LDAAlgorithm(),
        IPInsights(),
        FactorizationMachines(),
        NeuralTopicModel(),
        BlazingText(),
        Object2Vec(),
        DeepAR(),
        Seq2Seq(),
        ImageClassification(),
        ObjectDetection(),
        SemanticSegmentation(),
        ReinforcementLearning(),
    )
}


class UnknownAlgorithm(InvalidInput):
    code = "unknown_algorithm"


def get_algorithm(name: str) -> Algorithm[Any]:
    """The built-in algorithm called `name`; UnknownAlgorithm lists the ones there are."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UnknownAlgorithm(
            f"unknown algorithm {name!r}; built-ins: {sorted(ALGORITHMS)} (or 'script')"
        ) from None


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "InvalidHyperparameters",
    "RuntimeExceeded",
    "TrainedModel",
    "TrainingContext",
    "TrainingStopped",
    "UnknownAlgorithm",
    "get_algorithm",
]
