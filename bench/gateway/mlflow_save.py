"""Save the benchmark's booster as an MLflow model; runs inside bench/.venv-mlflow, not .venv.

Usage: python bench/gateway/mlflow_save.py MODEL_FILE OUTPUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mlflow.xgboost
import pandas as pd
import xgboost
from mlflow.models import infer_signature


def main() -> None:
    model_file, output = sys.argv[1], Path(sys.argv[2])
    booster = xgboost.Booster(model_file=model_file)
    names = booster.feature_names or [f"f{index}" for index in range(booster.num_features())]
    example = pd.DataFrame([[0.0] * len(names)], columns=names, dtype="float64")
    signature = infer_signature(example, booster.inplace_predict(example.to_numpy()))
    if output.exists():
        shutil.rmtree(output)
    mlflow.xgboost.save_model(booster, str(output), signature=signature, model_format="ubj")


if __name__ == "__main__":
    main()
