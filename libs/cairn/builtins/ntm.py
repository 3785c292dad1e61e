"""Neural Topic Model: a variational autoencoder over word counts (ProdLDA-style).

The encoder maps a document's word counts to a logistic-normal posterior over `num_topics`; the
decoder is a topic-word matrix. Served output is SageMaker's `topic_weights`: the softmax of
the posterior mean, one weight per topic, summing to 1.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cairn.builtins.torch_package import TorchModel
from cairn.errors import InvalidInput

if TYPE_CHECKING:
    import torch

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def build(architecture: dict[str, Any]) -> torch.nn.Module:
    import torch
    from torch import nn

    vocabulary = int(architecture["feature_dim"])
    topics = int(architecture["num_topics"])
    widths = [vocabulary, *[int(w) for w in architecture["encoder_layers"]]]
    activation = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[
        str(architecture["encoder_layers_activation"])
    ]

    class NTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for before, after in itertools.pairwise(widths):
                layers += [nn.Linear(before, after), activation()]
            self.encoder = nn.Sequential(*layers)
            self.mu = nn.Linear(widths[-1], topics)
            self.logvar = nn.Linear(widths[-1], topics)
            self.decoder = nn.Linear(topics, vocabulary)
            self.batch_norm = (
                nn.BatchNorm1d(vocabulary, affine=False)
                if architecture["batch_norm"]
                else nn.Identity()
            )

        def encode(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.encoder(torch.log1p(counts))
            return self.mu(hidden), self.logvar(hidden)

        def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(reconstruction loss, KL divergence) per document."""
            mu, logvar = self.encode(counts)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            theta = torch.softmax(z, dim=-1)
            log_words = torch.log_softmax(self.batch_norm(self.decoder(theta)), dim=-1)
            reconstruction = -(counts * log_words).sum(dim=-1)
            kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=-1)
            return reconstruction, kl

        def topic_weights(self, counts: torch.Tensor) -> torch.Tensor:
            mu, _ = self.encode(counts)
            weights: torch.Tensor = torch.softmax(mu, dim=-1)
            return weights

    return NTM()


class NeuralTopicModel(TorchModel):
    build = staticmethod(build)

    def score(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        counts = np.nan_to_num(np.asarray(rows, dtype=np.float32), nan=0.0)
        if (counts < 0).any():
            raise InvalidInput("word counts cannot be negative")
        weights = self.network.topic_weights(torch.from_numpy(counts))  # type: ignore[operator]
        return np.asarray(weights.numpy(), dtype=np.float64)
