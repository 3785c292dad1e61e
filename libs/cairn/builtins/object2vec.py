"""Object2Vec: two token-sequence encoders, a comparator and an MLP that labels the pair.

Requests follow SageMaker: `{"instances": [{"in0": [ids], "in1": [ids]}]}` gives
`{"predictions": [{"scores": [...]}]}` (classifier) or `{"scores": [value]}` (regressor); an
instance with only `in0` (or only `in1`) gives that encoder's `{"embeddings": [...]}`.
"""

from __future__ import annotations

from typing import Any, cast

from cairn.builtins.structured import StructuredModel, instances, int_list
from cairn.errors import InvalidInput


def build_network(architecture: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, vocab: int, embed: int, network: str, dim: int) -> None:
            super().__init__()
            self.network = network
            self.embedding = nn.Embedding(vocab + 1, embed, padding_idx=0)  # 0 pads
            if network == "bilstm":
                self.lstm = nn.LSTM(embed, dim // 2, batch_first=True, bidirectional=True)
            elif network == "hcnn":
                self.conv = nn.Sequential(
                    nn.Conv1d(embed, dim, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv1d(dim, dim, 3, padding=1),
                )
            else:
                self.project = nn.Linear(embed, dim)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            mask = (tokens > 0).float().unsqueeze(-1)
            vectors = self.embedding(tokens)
            if self.network == "bilstm":
                vectors, _ = self.lstm(vectors)
            elif self.network == "hcnn":
                vectors = self.conv(vectors.transpose(1, 2)).transpose(1, 2)
            else:
                vectors = self.project(vectors)
            pooled: torch.Tensor = (vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return pooled

    class Object2Vec(nn.Module):
        def __init__(self, a: dict[str, Any]) -> None:
            super().__init__()
            dim = int(a["enc_dim"])
            self.comparators = list(a["comparator_list"])
            self.enc0 = Encoder(
                a["enc0_vocab_size"], a["enc0_token_embedding_dim"], a["enc0_network"], dim
            )
            self.enc1 = Encoder(
                a["enc1_vocab_size"], a["enc1_token_embedding_dim"], a["enc1_network"], dim
            )
            if a["tied_token_embedding_weight"]:
                self.enc1.embedding = self.enc0.embedding
            activation = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}[
                a["mlp_activation"]
            ]
            width = dim * (len(self.comparators) + (1 if "concat" in self.comparators else 0))
            layers: list[nn.Module] = []
            for _ in range(int(a["mlp_layers"])):
                layers += [nn.Linear(width, a["mlp_dim"]), activation(), nn.Dropout(a["dropout"])]
                width = a["mlp_dim"]
            layers.append(nn.Linear(width, a["n_outputs"]))
            self.mlp = nn.Sequential(*layers)

        def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
            e0, e1 = self.enc0(in0), self.enc1(in1)
            parts = []
            for name in self.comparators:
                if name == "concat":
                    parts += [e0, e1]
                elif name == "abs_diff":
                    parts.append((e0 - e1).abs())
                else:
                    parts.append(e0 * e1)
            return self.mlp(torch.cat(parts, dim=1))  # type: ignore[no-any-return]

    return Object2Vec(architecture)


def pad(sequences: list[list[int]], max_len: int, vocab: int, what: str) -> Any:
    """Token ids (SageMaker's 0..vocab-1) shifted by one, truncated and zero-padded."""
    import torch

    rows = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for index, tokens in enumerate(sequences):
        if any(token < 0 or token >= vocab for token in tokens):
            raise InvalidInput(f"{what} holds a token id outside 0..{vocab - 1}")
        clipped = tokens[:max_len]
        if clipped:
            rows[index, : len(clipped)] = torch.tensor(clipped) + 1
    return rows


class Object2VecModel(StructuredModel):
    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def answer(self, payload: Any) -> Any:
        import torch

        a, network = self.architecture, cast(Any, self.network)
        items = instances(payload)
        if not all(isinstance(item, dict) for item in items):
            raise InvalidInput('each instance must be an object with "in0" and/or "in1"')
        side = {frozenset(item) & {"in0", "in1"} for item in items}
        if len(side) != 1 or not next(iter(side)):
            raise InvalidInput('every instance needs the same inputs: "in0" and "in1", or one')
        keys = sorted(next(iter(side)))
        tensors = {
            key: pad(
                [int_list(item[key], key) for item in items],
                a[f"{key.replace('in', 'enc')}_max_seq_len"],
                a[f"{key.replace('in', 'enc')}_vocab_size"],
                key,
            )
            for key in keys
        }
        if len(keys) == 1:
            encoder = network.enc0 if keys[0] == "in0" else network.enc1
            vectors = encoder(tensors[keys[0]])
            return {"predictions": [{"embeddings": row} for row in vectors.tolist()]}
        output = self.network(tensors["in0"], tensors["in1"])
        if a["output_layer"] == "softmax":
            scores = torch.softmax(output, dim=1).tolist()
            return {
                "predictions": [
                    {"scores": row, "predicted_label": max(range(len(row)), key=row.__getitem__)}
                    for row in scores
                ]
            }
        return {"predictions": [{"scores": [value]} for value in output[:, 0].tolist()]}
