"""ff_ppo's rollout values: one critic pass over the rollout's observations plus the final
observations of truncated episodes, checked by hand (one truncated and one terminated step),
against the critic over every true next observation on a real environment, and with more
truncations than the gathered batch holds (alone and under `vmap`)."""

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from stoix.base_types import Observation
from stoix.systems.ppo.anakin.ff_ppo import rollout_values
from stoix.utils.config import REPO_ROOT
from stoix.utils.multistep import truncated_gae
from stoix.wrappers import make_env


def obs_of(values) -> Observation:
    view = jnp.asarray(values, jnp.float32)[..., None]
    return Observation(view, jnp.ones((*view.shape[:-1], 2)), jnp.zeros(view.shape[:-1], jnp.int32))


def critic(o: Observation) -> jax.Array:  # the value of an observation is 10 x its number
    return 10.0 * o.agent_view[..., 0]


# Two environments, three steps. Environment 0: its episode is truncated at t=1 (final
# observation 7, next episode starts at 3). Environment 1: its episode terminates at t=0
# (final observation 9, next starts at 4). After the rollout the observations are 6 and 8.
OBS = [[1.0, 2.0], [5.0, 4.0], [3.0, 6.0]]
NEXT_OBS = [[5.0, 9.0], [7.0, 6.0], [6.0, 8.0]]
LAST_OBS = [6.0, 8.0]
DONE = np.asarray([[False, True], [True, False], [False, False]])
DISCOUNT = np.asarray([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
TRUNCATED = DONE & (DISCOUNT > 0)


def test_values_by_hand_with_a_truncated_and_a_terminated_step():
    for max_truncations in (1, 4, 0):  # gathered (1 slot, 4 slots with 3 unused); 0: the full pass
        v_tm1, v_t = rollout_values(
            critic, obs_of(OBS), obs_of(LAST_OBS), obs_of(NEXT_OBS), jnp.asarray(TRUNCATED), max_truncations
        )
        np.testing.assert_allclose(v_tm1, [[10, 20], [50, 40], [30, 60]])
        # Truncated at (1, 0): the final observation's 70, not the reset one's 30. Terminated
        # at (0, 1): the reset observation's 40 (multiplied by a zero discount below).
        np.testing.assert_allclose(v_t, [[50, 40], [70, 60], [60, 80]])

    reward = jnp.ones((3, 2))
    gamma, lam = 0.5, 0.5
    advantage, target = truncated_gae(
        reward, gamma * jnp.asarray(DISCOUNT), v_tm1, v_t, jnp.asarray(DONE), lam
    )
    # By hand. Environment 0: delta = 1 + 0.5 * v_t - v_tm1 = (16, -14, 1); the trace is cut
    # after the truncation, so A_1 = -14, A_0 = 16 + 0.25 * -14, A_2 = 1 (bootstrapped from 60).
    # Environment 1: the termination ignores v_t: delta_0 = 1 - 20 = -19, A_0 = -19; then
    # delta = (1 + 30 - 40, 1 + 40 - 60) = (-9, -19), A_1 = -9 + 0.25 * -19.
    np.testing.assert_allclose(advantage, [[12.5, -19.0], [-14.0, -13.75], [1.0, -19.0]])
    np.testing.assert_allclose(target, advantage + v_tm1)


def test_more_truncations_than_slots_under_vmap_match_each_alone():
    # Batch element 0 has one truncation, element 1 three: with one slot, element 1 needs the
    # full pass, and the branch is taken for both together.
    truncated = jnp.stack([jnp.asarray(TRUNCATED), jnp.ones((3, 2), bool).at[0, 0].set(False)])
    shifted = [(OBS, LAST_OBS, NEXT_OBS), [np.asarray(x) + 1.0 for x in (OBS, LAST_OBS, NEXT_OBS)]]
    batched = [jax.tree.map(lambda *x: jnp.stack(x), *[obs_of(e[j]) for e in shifted]) for j in range(3)]
    v = jax.vmap(
        lambda o, last, n, t: rollout_values(critic, o, last, n, t, 1, batch_axis="batch"), axis_name="batch"
    )(*batched, truncated)
    for i in range(2):
        alone = rollout_values(critic, *[jax.tree.map(lambda x: x[i], a) for a in batched], truncated[i], 6)
        np.testing.assert_allclose(v[0][i], alone[0])
        np.testing.assert_allclose(v[1][i], alone[1])


def test_real_environment_next_values_equal_the_critic_on_every_next_observation():
    # CartPole with a 25-step limit and random actions: truncations and terminations both happen
    # in 150 steps of 3 environments. Wherever the discount is not zero, the values must equal
    # a small random MLP critic applied to each true next observation.
    env_cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    env_cfg.max_episode_steps = 25
    env, _ = make_env(env_cfg)
    key = jax.random.PRNGKey(3)
    w = jax.random.normal(key, (4, 8))

    def mlp_critic(o: Observation) -> jax.Array:
        return jnp.tanh(o.agent_view @ w).sum(-1)

    state, timestep = env.reset(jax.random.split(key, 3))

    def step(carry, key):
        state, timestep = carry
        action = jax.random.randint(key, (3,), 0, 2)
        state, next_timestep = env.step(state, action)
        out = (
            timestep.observation,
            next_timestep.extras["next_obs"],
            next_timestep.last(),
            next_timestep.discount,
        )
        return (state, next_timestep), out

    (_, last), (obs, next_obs, done, discount) = jax.lax.scan(
        step, (state, timestep), jax.random.split(key, 150)
    )
    truncated = done & (discount > 0)
    assert int(truncated.sum()) >= 3 and int((done & (discount == 0)).sum()) >= 3
    for slots in (2, int(truncated.sum())):  # the full pass; then all gathered
        v_tm1, v_t = rollout_values(mlp_critic, obs, last.observation, next_obs, truncated, slots)
        np.testing.assert_allclose(v_tm1, mlp_critic(obs), rtol=1e-6, atol=1e-6)
        keep = np.asarray(discount > 0)
        np.testing.assert_allclose(
            np.asarray(v_t)[keep], np.asarray(mlp_critic(next_obs))[keep], rtol=1e-6, atol=1e-6
        )
