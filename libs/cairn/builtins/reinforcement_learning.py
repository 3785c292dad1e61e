"""Reinforcement learning: a stable-baselines3 policy for a Gymnasium environment, served.

The package holds the policy's tensors and `{"env", "algorithm", "net_arch"}`; loading makes
the environment only to learn its spaces and rebuilds the policy from them (never SB3's own
zip, which pickles). Requests: `{"instances": [observation, ...]}` gives
`{"predictions": [{"action": ...}, ...]}` (the deterministic action).
"""

from __future__ import annotations

import re
from typing import Any, cast

import numpy as np

from cairn.builtins.structured import StructuredModel, instances
from cairn.errors import InvalidInput

ENV_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}-v[0-9]+$")
ALGORITHMS = ("ppo", "a2c", "dqn")


def make_env(env_id: str) -> Any:
    """A registered Gymnasium environment; ids naming a module (`pkg:Env`) are refused."""
    import gymnasium

    if not ENV_ID.match(env_id) or env_id not in gymnasium.registry:
        raise InvalidInput(
            f"env {env_id!r} is not a registered Gymnasium environment id (e.g. CartPole-v1)"
        )
    try:
        return gymnasium.make(env_id)
    except gymnasium.error.Error as error:
        raise InvalidInput(f"env {env_id!r} cannot be made here: {error}") from None


def make_agent(a: dict[str, Any], env: Any, **options: Any) -> Any:
    import stable_baselines3

    kind = {
        "ppo": stable_baselines3.PPO,
        "a2c": stable_baselines3.A2C,
        "dqn": stable_baselines3.DQN,
    }
    return kind[a["algorithm"]](
        "MlpPolicy", env, policy_kwargs={"net_arch": list(a["net_arch"])}, **options
    )


def build_network(a: dict[str, Any]) -> Any:
    from cairn.artifacts.package import UnsupportedModelPackage
    from cairn.builtins import missing_extra

    why = missing_extra(("gymnasium", "stable_baselines3"), "deep", "serving an RL policy")
    if why is not None:
        raise UnsupportedModelPackage(why, extra="deep")
    if a.get("algorithm") not in ALGORITHMS:
        raise InvalidInput(f"algorithm must be one of {list(ALGORITHMS)}")
    agent = make_agent(a, make_env(str(a["env"])), device="cpu")
    return agent.policy


class ReinforcementLearningModel(StructuredModel):
    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def answer(self, payload: Any) -> Any:
        policy = cast(Any, self.network)
        space = policy.observation_space
        items = instances(payload, limit=10_000)
        try:
            observations = np.asarray(items, dtype=space.dtype or np.float32)
        except (TypeError, ValueError):
            raise InvalidInput("each instance must be an observation (a list of numbers)") from None
        shape = tuple(space.shape)
        if observations.shape[1:] != shape:
            raise InvalidInput(f"each observation must have shape {list(shape)}")
        actions, _ = policy.predict(observations, deterministic=True)
        return {"predictions": [{"action": action} for action in np.asarray(actions).tolist()]}
