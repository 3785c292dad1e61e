"""Seq2Seq: an RNN encoder, an attentional RNN decoder and greedy decoding over word tokens.

Tokens are whitespace-separated words; `vocab.src.json` / `vocab.trg.json` (SageMaker's file
names) map them to ids, with 0..3 reserved for <pad>, <unk>, <s> and </s>. Requests follow
SageMaker: `{"instances": [{"data": "a b c"}]}` gives `{"predictions": [{"target": "..."}]}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import UnsupportedModelPackage
from cairn.builtins.structured import StructuredModel, instances
from cairn.errors import InvalidInput

PAD, UNK, BOS, EOS = 0, 1, 2, 3
RESERVED = ["<pad>", "<unk>", "<s>", "</s>"]
SOURCE_VOCAB, TARGET_VOCAB = "vocab.src.json", "vocab.trg.json"


def build_network(a: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    def rnn(width: int) -> nn.Module:
        kind = nn.LSTM if a["rnn_cell_type"] == "lstm" else nn.GRU
        dropout = a["dropout"] if a["layers"] > 1 else 0.0
        return kind(width, a["rnn_num_hidden"], a["layers"], batch_first=True, dropout=dropout)

    class Seq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = a["rnn_num_hidden"]
            self.source_embed = nn.Embedding(a["source_vocab"], a["num_embed_source"], PAD)
            self.target_embed = nn.Embedding(a["target_vocab"], a["num_embed_target"], PAD)
            self.encoder = rnn(a["num_embed_source"])
            self.decoder = rnn(a["num_embed_target"] + hidden)
            self.attention = a["rnn_attention_type"]
            if self.attention == "bilinear":
                self.bilinear = nn.Linear(hidden, hidden, bias=False)
            elif self.attention == "mlp":
                self.query = nn.Linear(hidden, hidden)
                self.key = nn.Linear(hidden, hidden, bias=False)
                self.energy = nn.Linear(hidden, 1, bias=False)
            self.output = nn.Linear(2 * hidden, a["target_vocab"])

        def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, Any]:
            return self.encoder(self.source_embed(source))  # type: ignore[no-any-return]

        def attend(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> Any:
            if self.attention == "mlp":
                scores = self.energy(
                    torch.tanh(self.query(query)[:, :, None] + self.key(memory)[:, None])
                )[..., 0]
            else:
                keys = self.bilinear(memory) if self.attention == "bilinear" else memory
                scores = query @ keys.transpose(1, 2)
            scores = scores.masked_fill(~mask[:, None, :], -1e9)
            return torch.softmax(scores, dim=-1) @ memory

        def decode(
            self,
            previous: torch.Tensor,
            memory: torch.Tensor,
            mask: torch.Tensor,
            state: Any,
            context: torch.Tensor,
        ) -> tuple[torch.Tensor, Any, torch.Tensor]:
            """Logits of the next tokens (input feeding: the last attention joins the input)."""
            steps = []
            for index in range(previous.shape[1]):
                embedded = self.target_embed(previous[:, index : index + 1])
                output, state = self.decoder(torch.cat([embedded, context], dim=-1), state)
                context = self.attend(output, memory, mask)
                steps.append(self.output(torch.cat([output, context], dim=-1)))
            return torch.cat(steps, dim=1), state, context

        def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
            memory, state = self.encode(source)
            context = memory.new_zeros((source.shape[0], 1, memory.shape[-1]))
            logits, _, _ = self.decode(target_in, memory, source != PAD, state, context)
            return logits

        def greedy(self, source: torch.Tensor, max_len: int) -> torch.Tensor:
            memory, state = self.encode(source)
            context = memory.new_zeros((source.shape[0], 1, memory.shape[-1]))
            token = torch.full((source.shape[0], 1), BOS, dtype=torch.long)
            out = []
            for _ in range(max_len):
                logits, state, context = self.decode(token, memory, source != PAD, state, context)
                token = logits.argmax(-1)
                out.append(token)
            return torch.cat(out, dim=1)

    return Seq2Seq()


def encode_sentences(sentences: list[str], vocab: Mapping[str, int], max_len: int) -> Any:
    import torch

    rows = torch.full((len(sentences), max(1, max_len)), PAD, dtype=torch.long)
    for row, sentence in enumerate(sentences):
        ids = [vocab.get(word, UNK) for word in sentence.split()][:max_len]
        if ids:
            rows[row, : len(ids)] = torch.tensor(ids)
    return rows


def decode_ids(rows: Any, words: list[str]) -> list[str]:
    sentences = []
    for row in rows.tolist():
        tokens = []
        for token in row:
            if token == EOS:
                break
            if token >= len(RESERVED):
                tokens.append(words[token])
        sentences.append(" ".join(tokens))
    return sentences


class Seq2SeqModel(StructuredModel):
    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        super().__init__(manifest, blobs)
        try:
            self.source_vocab: dict[str, int] = json.loads(blobs[SOURCE_VOCAB])
            target: dict[str, int] = json.loads(blobs[TARGET_VOCAB])
        except (KeyError, ValueError) as error:
            raise UnsupportedModelPackage(f"seq2seq package vocabularies: {error}") from None
        self.target_words = [word for word, _ in sorted(target.items(), key=lambda kv: kv[1])]

    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def answer(self, payload: Any) -> Any:
        items = instances(payload, limit=1000)
        if not all(isinstance(i, dict) and isinstance(i.get("data"), str) for i in items):
            raise InvalidInput('each instance must be {"data": "<tokenized source sentence>"}')
        a = self.architecture
        source = encode_sentences(
            [i["data"] for i in items], self.source_vocab, a["max_seq_len_source"]
        )
        targets = decode_ids(
            cast(Any, self.network).greedy(source, a["max_seq_len_target"] + 1), self.target_words
        )
        return {"predictions": [{"target": target} for target in targets]}

    def record_answers(self, records: list[Any], environment: dict[str, str]) -> list[Any]:
        """SageMaker's batch lines are `{"source": "..."}`; a bare sentence (text/plain) too."""
        sources = [_source(record) for record in records]
        return super().record_answers([{"data": source} for source in sources], environment)


def _source(record: Any) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        value = record.get("source", record.get("data"))
        if isinstance(value, str):
            return value
    raise InvalidInput('each record must be {"source": "<tokenized source sentence>"}')
