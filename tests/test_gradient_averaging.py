"""Replicas average their gradients: one update on 2 devices x 2 update batches moves the
parameters by the mean of the moves the four slots make alone (with plain SGD, whose step is
linear in the gradient). A sum, one replica's gradient or a zero update each fail this."""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, TINY_ARCH, device_env

# Each slot of the 2x2 run is sliced out and updated alone by the same system built for one
# slot (same per-slot sizes, same keys, so the same rollout and the same replayed batch).
SCRIPT = textwrap.dedent(
    """
    import sys, jax, numpy as np, optax
    from stoix.architectures.anakin import init_learner_state
    from stoix.utils.config import compose_config
    from stoix.utils.sizes import anakin_sizes
    from stoix.wrappers import make_env

    system, entry, slot_envs, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    LR = 0.1
    if system == "ff_ppo":
        from stoix.systems.ppo.anakin import ff_ppo as module
        module.make_optimizer = lambda cfg, steps: optax.sgd(LR)
    else:
        from stoix.systems.q_learning import ff_dqn as module

        class _SGDOptax:  # ff_dqn builds Adam inline; swap it for SGD in this process only
            def __getattr__(self, name):
                return getattr(optax, name)

            @staticmethod
            def adam(*args, **kwargs):
                return optax.sgd(LR)

        module.optax = _SGDOptax()

    def build(devices, batches, sizes_over):
        cfg = compose_config(entry, [*extra, *sizes_over(devices * batches), f"arch.update_batch_size={batches}"])
        sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), devices)
        assert sizes.num_updates_per_eval == 1, sizes
        env, _ = make_env(cfg.env)
        return module.learner_setup(env, cfg, sizes, jax.random.PRNGKey(3))

    def sizes_over(slots):
        out = [f"arch.total_num_envs={slot_envs * slots}"]
        if system == "ff_dqn":
            out += [f"system.total_buffer_size={256 * slots}", f"system.total_batch_size={16 * slots}"]
        rollout = 8
        out.append(f"arch.total_timesteps={2 * rollout * slot_envs * slots}")
        return out

    big = build(2, 2, sizes_over)
    one = build(1, 1, sizes_over)
    state = jax.device_get(big.learner_state)
    params_of = (lambda s: s.params) if system == "ff_ppo" else (lambda s: s.params.online)
    before = params_of(state)
    averaged = params_of(jax.device_get(big.learn(big.learner_state).learner_state))
    moves = []
    for d in range(2):
        for b in range(2):
            slot = jax.tree.map(lambda x: x[d : d + 1, b : b + 1], state)
            slot = jax.device_put(slot, jax.devices()[0])
            after = params_of(jax.device_get(one.learn(slot).learner_state))
            moves.append(jax.tree.map(lambda a, o: a[0, 0] - o[d, b], after, before))
    for leaf in jax.tree.leaves(averaged):  # every replica took the same step
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1, :1], leaf.shape))
    mean_move = jax.tree.map(lambda *m: np.mean(m, axis=0), *moves)
    big_move = jax.tree.map(lambda a, o: a[0, 0] - o[0, 0], averaged, before)
    moved = sum(float(np.abs(m).sum()) for m in jax.tree.leaves(big_move))
    spread = sum(float(np.abs(a - b).sum()) for a, b in zip(jax.tree.leaves(moves[0]), jax.tree.leaves(moves[1])))
    assert moved > 1e-3, f"the parameters did not move ({moved})"
    assert spread > 1e-3, f"the slots saw the same data, so a mean is not distinguishable ({spread})"
    for got, want in zip(jax.tree.leaves(big_move), jax.tree.leaves(mean_move)):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-6)
    print("OK", moved, spread)
    """
)

TINY_OVERRIDES = [o for o in TINY_ARCH if not o.startswith(("arch.total_num_envs", "arch.total_timesteps"))]
CASES = {
    "ff_ppo": (
        "default/anakin/default_ff_ppo",
        2,
        ["system.rollout_length=8", "system.num_minibatches=1", "system.epochs=1"],
    ),
    "ff_dqn": (
        "default/anakin/default_ff_dqn",
        2,
        [
            "system.rollout_length=8",
            "system.epochs=1",
            "system.warmup_steps=64",
            "system.epsilon_start=1.0",  # random actions: the same data whatever the parameters
            "system.epsilon_finish=1.0",
        ],
    ),
}


@pytest.mark.parametrize("system", sorted(CASES))
def test_one_update_moves_by_the_mean_of_the_slots_moves(system, tmp_path):
    entry, slot_envs, overrides = CASES[system]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            system,
            entry,
            str(slot_envs),
            *TINY_OVERRIDES,
            *overrides,
            f"logger.base_exp_path={tmp_path}",
        ],
        cwd=REPO_ROOT,
        env=device_env(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


SEBULBA_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from stoix.base_types import ActorCriticParams, Observation
    from stoix.networks.base import make_actor, make_critic
    from stoix.systems.ppo.sebulba import ff_ppo
    from stoix.utils.config import compose_config
    from dm_env import specs

    cfg = compose_config("default/sebulba/default_ff_ppo", ["system.num_minibatches=1", "system.epochs=1"])
    T, E, D = 4, 4, 2  # rollout steps, environments, learner devices
    rng = np.random.default_rng(0)
    obs = lambda: Observation(rng.normal(size=(T, E, 4)).astype(np.float32), np.ones((T, E, 2), np.float32), np.zeros((T, E), np.int32))
    traj = ff_ppo.Trajectory(
        obs=obs(), action=rng.integers(0, 2, (T, E)).astype(np.int32),
        log_prob=np.full((T, E), np.log(0.5), np.float32), reward=rng.normal(size=(T, E)).astype(np.float32),
        discount=np.ones((T, E), np.float32), done=np.zeros((T, E), bool), next_obs=obs(),
    )
    actor = make_actor(cfg.network.actor_network, specs.DiscreteArray(2))
    critic = make_critic(cfg.network.critic_network)
    dummy = Observation(np.zeros((1, 4), np.float32), np.ones((1, 2), np.float32), np.zeros((1,), np.int32))
    params = ActorCriticParams(actor.init(jax.random.PRNGKey(0), dummy), critic.init(jax.random.PRNGKey(1), dummy))
    sgd = optax.sgd(0.1)

    def run(devices, shards):
        update = jax.pmap(ff_ppo.make_update_fn(actor, critic, sgd, cfg, T * E // D), axis_name="device", devices=devices)
        stack = lambda tree: jax.tree.map(lambda *x: np.stack(x), *tree)
        out, _, _ = update(stack([params] * len(shards)), stack([sgd.init(params)] * len(shards)), stack(shards), jax.random.split(jax.random.PRNGKey(2), len(shards)))
        return jax.tree.map(lambda x: np.asarray(x), out)

    halves = [jax.tree.map(lambda x: x[:, i * E // D : (i + 1) * E // D], traj) for i in range(D)]
    both = run(jax.devices()[:2], halves)
    for leaf in jax.tree.leaves(both):
        np.testing.assert_array_equal(leaf[0], leaf[1])  # the two learner devices agree
    alone = [run(jax.devices()[:1], [h]) for h in halves]
    move = lambda after: jax.tree.map(lambda a, p: a[0] - np.asarray(p), after, params)
    mean_move = jax.tree.map(lambda a, b: (a + b) / 2, move(alone[0]), move(alone[1]))
    spread = sum(float(np.abs(a - b).sum()) for a, b in zip(jax.tree.leaves(move(alone[0])), jax.tree.leaves(move(alone[1]))))
    assert spread > 1e-3, spread
    for got, want in zip(jax.tree.leaves(move(both)), jax.tree.leaves(mean_move)):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-6)
    print("OK")
    """
)


def test_sebulba_learner_devices_move_by_the_mean_of_their_halves_moves():
    proc = subprocess.run(
        [sys.executable, "-c", SEBULBA_SCRIPT],
        cwd=REPO_ROOT,
        env=device_env(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
