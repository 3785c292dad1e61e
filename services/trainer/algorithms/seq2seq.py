"""Seq2Seq (SageMaker's `seq2seq`): translate token sequences with an attentional RNN.

Input is tokenized parallel text: in the `train` (and `validation`) channel, each `NAME.src`
file pairs line by line with `NAME.trg` (the files SageMaker's preprocessing starts from). An
optional `vocab` channel holds `vocab.src.json` / `vocab.trg.json`; else they are built from
train. Decoding is greedy (`beam_size` 1).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field, model_validator

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import (
    Channels,
    FileAlgorithm,
    RawChannel,
    make_optimizer,
    require,
    run_epochs,
)
from services.trainer.algorithms.torch_support import (
    TORCH,
    minibatches,
    seed_everything,
    torch_device,
    torch_model,
)

MAX_VOCAB = 200_000


class Seq2SeqHyperparameters(Hyperparameters):
    max_seq_len_source: int = Field(default=100, ge=1, le=5000)
    max_seq_len_target: int = Field(default=100, ge=1, le=5000)
    num_layers_encoder: int = Field(default=1, ge=1, le=10)
    num_layers_decoder: int = Field(default=1, ge=1, le=10)
    rnn_num_hidden: int = Field(default=1024, ge=1, le=4096)
    rnn_cell_type: Literal["lstm", "gru"] = "lstm"
    rnn_attention_type: Literal["dot", "bilinear", "mlp"] = "mlp"
    num_embed_source: int = Field(default=512, ge=1, le=4096)
    num_embed_target: int = Field(default=512, ge=1, le=4096)
    dropout: float = Field(default=0.0, ge=0, le=1)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    max_num_epochs: int = Field(default=10, ge=1, le=1000)
    optimizer_type: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(default=0.0003, gt=0, le=10)
    momentum: float = Field(default=0.0, ge=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0, le=10)
    clip_gradient: float = Field(default=1.0, gt=0)
    max_num_checkpoint_not_improved: int | None = Field(default=3, ge=1)
    optimized_metric: Literal["perplexity", "accuracy"] = "perplexity"
    beam_size: int = Field(default=1, ge=1, le=1, description="Greedy decoding only.")
    seed: int = 0

    @model_validator(mode="after")
    def _same_depth(self) -> Seq2SeqHyperparameters:
        if self.num_layers_encoder != self.num_layers_decoder:
            raise ValueError("num_layers_encoder and num_layers_decoder must be equal here")
        return self


def parallel_text(channel: RawChannel) -> list[tuple[str, str]]:
    """Line-aligned (source, target) pairs from each `NAME.src` + `NAME.trg` in the channel."""
    pairs: list[tuple[str, str]] = []
    for path, data in channel.with_suffix(".src").items():
        partner = path[: -len(".src")] + ".trg"
        if partner not in channel.files:
            raise InvalidInput(f"channel {channel.name!r}: {path} has no {partner}")
        sources = data.decode("utf-8").splitlines()
        targets = channel.files[partner].decode("utf-8").splitlines()
        if len(sources) != len(targets):
            raise InvalidInput(
                f"{channel.name}/{path} has {len(sources)} lines, {partner} {len(targets)}"
            )
        pairs += [(s, t) for s, t in zip(sources, targets, strict=True) if s.strip()]
    if not pairs:
        raise InvalidInput(f"channel {channel.name!r} holds no NAME.src + NAME.trg sentence pairs")
    return pairs


def build_vocab(sentences: list[str]) -> dict[str, int]:
    from cairn.builtins.seq2seq import RESERVED

    counts = Counter(word for sentence in sentences for word in sentence.split())
    words = [word for word, _ in counts.most_common(MAX_VOCAB)]
    return {word: index for index, word in enumerate([*RESERVED, *words])}


def read_vocab(channel: RawChannel, name: str) -> dict[str, int]:
    try:
        vocab = json.loads(channel.files[name])
    except (KeyError, ValueError) as error:
        raise InvalidInput(f"the vocab channel needs a JSON {name}: {error}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise InvalidInput(f"{name} must map each word to its integer id")
    if sorted(vocab.values()) != list(range(len(vocab))) or len(vocab) < 5:
        raise InvalidInput(f"{name} ids must be 0..n-1, with 0..3 for <pad> <unk> <s> </s>")
    return vocab


class Seq2Seq(FileAlgorithm[Seq2SeqHyperparameters]):
    name = "seq2seq"
    hyperparameters_model = Seq2SeqHyperparameters
    requires = TORCH
    channels = ("train", "validation", "vocab")

    def train_files(
        self, channels: Channels, hyperparameters: Seq2SeqHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        import torch
        from cairn.builtins.seq2seq import (
            EOS,
            PAD,
            SOURCE_VOCAB,
            TARGET_VOCAB,
            build_network,
            encode_sentences,
        )

        hp = hyperparameters
        train_pairs = parallel_text(require(channels, "train", self.name))
        held_name = "validation" if "validation" in channels else "train"
        held_pairs = parallel_text(channels[held_name])
        if "vocab" in channels:
            source_vocab = read_vocab(channels["vocab"], SOURCE_VOCAB)
            target_vocab = read_vocab(channels["vocab"], TARGET_VOCAB)
        else:
            source_vocab = build_vocab([s for s, _ in train_pairs])
            target_vocab = build_vocab([t for _, t in train_pairs])
        arch = {
            "source_vocab": len(source_vocab),
            "target_vocab": len(target_vocab),
            "layers": hp.num_layers_encoder,
            **hp.model_dump(
                include={
                    "max_seq_len_source",
                    "max_seq_len_target",
                    "rnn_num_hidden",
                    "rnn_cell_type",
                    "rnn_attention_type",
                    "num_embed_source",
                    "num_embed_target",
                    "dropout",
                }
            ),
        }

        def tensors(pairs: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
            source = encode_sentences([s for s, _ in pairs], source_vocab, hp.max_seq_len_source)
            target = encode_sentences([t for _, t in pairs], target_vocab, hp.max_seq_len_target)
            target = torch.cat([target, torch.full((len(pairs), 1), PAD)], dim=1)
            lengths = (target != PAD).sum(1)
            target[torch.arange(len(pairs)), lengths] = EOS  # </s> right after the sentence
            from cairn.builtins.seq2seq import BOS

            target_in = torch.cat([torch.full((len(pairs), 1), BOS), target[:, :-1]], dim=1)
            target_in[target_in == EOS] = PAD
            return source, target_in, target

        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        train, held = tensors(train_pairs), tensors(held_pairs)
        network = build_network(arch).to(device)
        optimizer = make_optimizer(
            hp.optimizer_type, network.parameters(), hp.learning_rate, hp.momentum, hp.weight_decay
        )
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=PAD)

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            total = 0.0
            for rows in minibatches(len(train[0]), hp.batch_size, rng):
                source, target_in, target = (t[rows].to(device) for t in train)
                logits = network(source, target_in)
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), hp.clip_gradient)
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            return {"train:loss": total / len(train[0])}

        def evaluate() -> dict[str, float]:
            network.eval()
            with torch.no_grad():
                source, target_in, target = (t.to(device) for t in held)
                logits = network(source, target_in)
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            real = target != PAD
            correct = (logits.argmax(-1) == target) & real
            return {
                f"{held_name}:perplexity": float(torch.exp(loss)),
                f"{held_name}:accuracy": float(correct.sum() / real.sum()),
            }

        metrics = run_epochs(
            ctx,
            hp.max_num_epochs,
            train_epoch,
            evaluate,
            patience=hp.max_num_checkpoint_not_improved,
            watch=f"{held_name}:{hp.optimized_metric}",
            higher_is_better=hp.optimized_metric == "accuracy",
        )
        ensure_not_stopped(ctx)
        return torch_model(
            network,
            arch,
            task="custom",
            outputs=[OutputColumn(name="target")],
            metrics=metrics,
            device=device_name,
            details={"pairs": len(train_pairs)},
            extra_files={
                SOURCE_VOCAB: json.dumps(source_vocab).encode(),
                TARGET_VOCAB: json.dumps(target_vocab).encode(),
            },
        )
