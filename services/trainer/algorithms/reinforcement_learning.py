"""Reinforcement learning: train a stable-baselines3 agent on a Gymnasium environment.

SageMaker RL runs the user's own scripts (Coach or Ray RLlib); Cairn's built-in takes an
environment id instead of a data channel and trains PPO, A2C or DQN on it, with SB3's names
for the hyperparameters. A job has no input channels.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field, field_validator

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import Channels, FileAlgorithm
from services.trainer.algorithms.torch_support import seed_everything, torch_device, torch_model

RL = (("torch", "safetensors", "gymnasium", "stable_baselines3"), "deep")


class ReinforcementLearningHyperparameters(Hyperparameters):
    env: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}-v[0-9]+$")
    algorithm: Literal["ppo", "a2c", "dqn"] = "ppo"
    total_timesteps: int = Field(default=50_000, ge=100, le=100_000_000)
    learning_rate: float = Field(default=0.0003, gt=0, le=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    n_steps: int = Field(default=2048, ge=8, le=100_000, description="PPO/A2C rollout length.")
    batch_size: int = Field(default=64, ge=8, le=100_000)
    n_epochs: int = Field(default=10, ge=1, le=100, description="PPO passes per rollout.")
    ent_coef: float = Field(default=0.0, ge=0, le=1)
    net_arch: str = "64,64"
    eval_episodes: int = Field(default=10, ge=1, le=1000)
    seed: int = 0

    @field_validator("env")
    @classmethod
    def _registered(cls, value: str) -> str:
        import gymnasium

        if value not in gymnasium.registry:
            raise ValueError(f"{value!r} is not a registered Gymnasium environment (CartPole-v1)")
        return value

    @field_validator("net_arch")
    @classmethod
    def _layers(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",")]
        if not all(part.isdigit() and 1 <= int(part) <= 4096 for part in parts) or len(parts) > 8:
            raise ValueError('net_arch lists up to 8 layer widths, e.g. "64,64"')
        return value


class ReinforcementLearning(FileAlgorithm[ReinforcementLearningHyperparameters]):
    name = "reinforcement-learning"
    hyperparameters_model = ReinforcementLearningHyperparameters
    requires = RL
    channels = ()

    def train_files(
        self,
        channels: Channels,
        hyperparameters: ReinforcementLearningHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        from cairn.builtins.reinforcement_learning import make_agent, make_env
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.monitor import Monitor

        hp = hyperparameters
        arch = {
            "env": hp.env,
            "algorithm": hp.algorithm,
            "net_arch": [int(part) for part in hp.net_arch.split(",")],
        }
        device, device_name = torch_device(ctx)
        seed_everything(hp.seed)
        env = make_env(hp.env)
        options: dict[str, Any] = {
            "learning_rate": hp.learning_rate,
            "gamma": hp.gamma,
            "seed": hp.seed,
            "device": device,
            "verbose": 0,
        }
        if hp.algorithm in ("ppo", "a2c"):
            options.update(n_steps=hp.n_steps, ent_coef=hp.ent_coef)
        if hp.algorithm in ("ppo", "dqn"):
            options["batch_size"] = hp.batch_size
        if hp.algorithm == "ppo":
            options["n_epochs"] = hp.n_epochs
        agent = make_agent(arch, env, **options)
        # SB3's default logger makes a `SB3-<date>` folder in the temp dir on every learn(); the
        # job reports through ctx.progress, so its logger writes nowhere.
        agent.set_logger(Logger(folder=None, output_formats=[]))

        class Progress(BaseCallback):
            """Each rollout: the mean reward of recent episodes; stops at a stop request."""

            def _on_rollout_end(self) -> None:
                rewards = [info["r"] for info in self.model.ep_info_buffer or []]
                if rewards:
                    ctx.progress(
                        self.num_timesteps,
                        hp.total_timesteps,
                        {"train:episode_reward_mean": float(np.mean(rewards))},
                    )

            def _on_step(self) -> bool:
                return not ctx.should_stop()

        agent.learn(total_timesteps=hp.total_timesteps, callback=Progress())
        ensure_not_stopped(ctx)
        mean, spread = cast(
            tuple[float, float],
            evaluate_policy(
                agent,
                Monitor(make_env(hp.env)),
                n_eval_episodes=hp.eval_episodes,
                deterministic=True,
            ),
        )
        metrics = {
            "validation:episode_reward_mean": float(mean),
            "validation:episode_reward_std": float(spread),
        }
        ctx.progress(hp.total_timesteps, hp.total_timesteps, metrics)
        return torch_model(
            agent.policy,
            arch,
            task="custom",
            outputs=[OutputColumn(name="action")],
            metrics=metrics,
            device=device_name,
            details={"env": hp.env, "timesteps": int(agent.num_timesteps)},
        )
