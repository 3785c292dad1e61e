"""IP Insights: (entity, IPv4 address) -> how usual the pair is, from learned embeddings.

Entities are hashed into `num_entity_vectors` buckets, as SageMaker does, so an entity never seen
in training still gets a vector. An address is the sum of hashed embeddings of its /8, /16, /24
prefixes and of itself, passed through `num_ip_encoder_layers` dense layers: addresses in a
subnet an entity uses look alike. The score is SageMaker's `dot_product`: low means unusual.
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cairn.builtins.torch_package import TorchModel
from cairn.errors import InvalidInput

if TYPE_CHECKING:
    import torch

IP_BUCKETS = 1 << 16  # hashed address-prefix vectors


def _bucket(text: str, buckets: int) -> int:
    return zlib.crc32(text.encode()) % buckets


def entity_ids(entities: npt.NDArray[Any], buckets: int) -> npt.NDArray[np.int64]:
    return np.fromiter((_bucket(str(e), buckets) for e in entities), np.int64, len(entities))


def ip_ids(addresses: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """(n, 4) hashed ids of each address's /8, /16, /24 and /32; InvalidInput on a non-IPv4."""
    ids = np.empty((len(addresses), 4), dtype=np.int64)
    for row, address in enumerate(addresses):
        try:
            octets = str(ipaddress.IPv4Address(str(address).strip())).split(".")
        except ValueError:
            raise InvalidInput(f"row {row}: {str(address)[:50]!r} is not an IPv4 address") from None
        for level in range(4):
            prefix = ".".join(octets[: level + 1]) + f"/{8 * (level + 1)}"
            ids[row, level] = _bucket(prefix, IP_BUCKETS)
    return ids


def random_addresses(count: int, rng: np.random.Generator) -> npt.NDArray[Any]:
    """Uniformly random public-looking IPv4 addresses (negative samples)."""
    octets = rng.integers(1, 255, size=(count, 4))
    return np.array([".".join(map(str, row)) for row in octets.tolist()], dtype=object)


def build(architecture: dict[str, Any], sparse: bool = False) -> torch.nn.Module:
    """The network; `sparse` gradients let training update only the looked-up rows."""
    import torch
    from torch import nn

    dim = int(architecture["vector_dim"])

    class IPInsightsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            entities = int(architecture["num_entity_vectors"])
            self.entity = nn.Embedding(entities, dim, sparse=sparse)
            self.ip = nn.EmbeddingBag(IP_BUCKETS, dim, mode="sum", sparse=sparse)
            layers: list[nn.Module] = []
            for _ in range(int(architecture["num_ip_encoder_layers"])):
                layers += [nn.Linear(dim, dim), nn.Tanh()]
            self.encoder = nn.Sequential(*layers)
            nn.init.normal_(self.entity.weight, std=0.1)
            nn.init.normal_(self.ip.weight, std=0.1)

        def forward(self, entities: torch.Tensor, addresses: torch.Tensor) -> torch.Tensor:
            encoded = self.encoder(self.ip(addresses))
            return torch.sum(self.entity(entities) * encoded, dim=-1)

    return IPInsightsNet()


class IPInsightsModel(TorchModel):
    """Scores (entity, address) rows: `dot_product`, higher = more usual (SageMaker's output)."""

    build = staticmethod(build)

    def score(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        entities = entity_ids(rows[:, 0], int(self.architecture["num_entity_vectors"]))
        addresses = ip_ids(rows[:, 1])
        scores = self.network(torch.from_numpy(entities), torch.from_numpy(addresses))
        return np.asarray(scores.numpy(), dtype=np.float64)
