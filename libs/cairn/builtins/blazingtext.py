"""BlazingText: Word2Vec vectors (gensim-trained) and fastText-style text classification (torch).

Word2Vec packages hold `vectors.safetensors` and `vocabulary.json` and are served with numpy:
each request row is a word, the answer SageMaker's `{"vector": [...], "word": ...}` (zeros for
a word outside the vocabulary). Supervised packages are torch: a sentence's words and hashed
word n-grams are averaged into one vector and classified, as fastText does; the answer is
SageMaker's `{"label": ["__label__x"], "prob": [p]}`. Text is split on whitespace, as BlazingText
expects tokenised input.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import LoadedModel, UnsupportedModelPackage
from cairn.builtins.torch_package import TorchModel

if TYPE_CHECKING:
    import torch

VECTORS_FILE = "vectors.safetensors"
VOCABULARY_FILE = "vocabulary.json"
LABEL_PREFIX = "__label__"


def tokens(text: str) -> list[str]:
    return str(text).split()


def token_ids(
    texts: Sequence[str], index: Mapping[str, int], buckets: int, word_ngrams: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(flat ids, offsets) for an EmbeddingBag: known words, then hashed 2..n-grams."""
    ids: list[int] = []
    offsets: list[int] = []
    vocabulary = len(index)
    for text in texts:
        offsets.append(len(ids))
        words = tokens(text)
        ids.extend(index[word] for word in words if word in index)
        if buckets:
            for n in range(2, word_ngrams + 1):
                for start in range(len(words) - n + 1):
                    gram = " ".join(words[start : start + n])
                    ids.append(vocabulary + zlib.crc32(gram.encode()) % buckets)
    return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def build(architecture: dict[str, Any], sparse: bool = False) -> torch.nn.Module:
    from torch import nn

    rows = int(architecture["vocabulary_size"]) + int(architecture["buckets"])
    dim = int(architecture["vector_dim"])

    class FastTextClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.EmbeddingBag(rows, dim, mode="mean", sparse=sparse)
            self.output = nn.Linear(dim, int(architecture["num_labels"]))
            nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

        def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.output(self.embedding(ids, offsets))
            return logits

    return FastTextClassifier()


def label_name(label: str) -> str:
    return label if label.startswith(LABEL_PREFIX) else LABEL_PREFIX + label


class TextClassifierModel(TorchModel):
    """Supervised mode: the most likely label of each sentence and its probability."""

    build = staticmethod(build)
    response_envelope = None  # SageMaker: [{"label": ["__label__x"], "prob": [p]}, ...]

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        super().__init__(manifest, blobs)
        vocabulary = _vocabulary(blobs)
        self.index = {word: i for i, word in enumerate(vocabulary)}
        self.labels = [label_name(label) for label in manifest.class_labels or []]

    def score(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        ids, offsets = token_ids(
            [str(text) for text in rows[:, 0]],
            self.index,
            int(self.architecture["buckets"]),
            int(self.architecture["word_ngrams"]),
        )
        logits = self.network(torch.from_numpy(ids), torch.from_numpy(offsets))
        probabilities = torch.softmax(logits, dim=-1).numpy()
        answer = np.empty((len(rows), 2), dtype=object)
        for row, p in enumerate(probabilities):
            best = int(p.argmax())
            answer[row, 0] = [self.labels[best]]
            answer[row, 1] = [float(p[best])]
        return answer


class WordVectorsModel(LoadedModel):
    """Word2Vec mode: each row's word and its vector (zeros when the word is unknown)."""

    response_envelope = None  # SageMaker: [{"vector": [...], "word": "w"}, ...]

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        from safetensors.numpy import load

        super().__init__(manifest)
        if VECTORS_FILE not in blobs:
            raise UnsupportedModelPackage(f"word2vec package has no {VECTORS_FILE}")
        self.vectors = load(blobs[VECTORS_FILE])["vectors"]
        vocabulary = _vocabulary(blobs)
        if len(vocabulary) != len(self.vectors):
            raise UnsupportedModelPackage("vocabulary and vectors differ in length")
        self.index = {word: i for i, word in enumerate(vocabulary)}

    def predict(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        rows = np.asarray(matrix, dtype=object)
        zeros = [0.0] * self.vectors.shape[1]
        answer = np.empty((len(rows), 2), dtype=object)
        for row, cell in enumerate(rows[:, 0]):
            word = str(cell).strip()
            position = self.index.get(word)
            answer[row, 0] = zeros if position is None else self.vectors[position].tolist()
            answer[row, 1] = word
        return answer


def _vocabulary(blobs: Mapping[str, bytes]) -> list[str]:
    if VOCABULARY_FILE not in blobs:
        raise UnsupportedModelPackage(f"blazingtext package has no {VOCABULARY_FILE}")
    vocabulary = json.loads(blobs[VOCABULARY_FILE])
    if not isinstance(vocabulary, list) or not all(isinstance(w, str) for w in vocabulary):
        raise UnsupportedModelPackage(f"{VOCABULARY_FILE} is not a list of words")
    return vocabulary


def load(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> LoadedModel:
    """Word vectors (gensim package) or the text classifier (torch package)."""
    if manifest.framework == "gensim":
        return WordVectorsModel(manifest, blobs)
    return TextClassifierModel(manifest, blobs)
