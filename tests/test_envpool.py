"""The envpool wrapper: same-step resets with the true final observation, termination vs
truncation, Atari lives and clipped rewards kept out of the reported returns, and errors."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from stoix.utils.config import CONFIG_DIR, StoixConfigError
from stoix.wrappers import make_host_envs
from stoix.wrappers.envpool import EnvPoolVecEnv, make_envpool_envs


def test_truncation_keeps_discount_one_and_the_final_observation():
    env = EnvPoolVecEnv(make_envpool_envs("CartPole-v1", 3, seed=0, max_episode_steps=4))
    reference = make_envpool_envs("CartPole-v1", 3, seed=0, max_episode_steps=4)  # raw envpool
    first = env.reset()
    ref_obs, _ = reference.reset()
    np.testing.assert_allclose(first.observation.agent_view, ref_obs)
    actions = np.array([0, 1, 0], np.int32)  # balanced enough to outlive 4 steps
    for _ in range(4):
        step = env.step(actions)
        ref_obs, _, ref_term, ref_trunc, _ = reference.step(actions)
        np.testing.assert_allclose(step.next_obs.agent_view, ref_obs)
        assert not ref_term.any()
    assert ref_trunc.all() and step.last.all()
    np.testing.assert_array_equal(step.discount, 1.0)
    np.testing.assert_array_equal(step.episode_metrics.is_terminal_step, True)
    np.testing.assert_array_equal(step.episode_metrics.episode_length, 4)
    np.testing.assert_array_equal(step.episode_metrics.episode_return, 4.0)
    # The observation to act on is the first of the next episode, not the final one.
    assert np.abs(step.observation.agent_view).max() <= 0.05
    assert not np.allclose(step.observation.agent_view, step.next_obs.agent_view)
    np.testing.assert_array_equal(step.observation.step_count, 0)
    after = env.step(actions)
    assert not after.last.any() and not after.episode_metrics.is_terminal_step.any()
    # The step after the reset applies the action to the reset state (CartPole's Euler step:
    # x' = x + 0.02 x_dot), i.e. envpool did not spend it on a reset of its own.
    x, x_dot = step.observation.agent_view[:, 0], step.observation.agent_view[:, 1]
    np.testing.assert_allclose(after.next_obs.agent_view[:, 0], x + 0.02 * x_dot, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(after.episode_metrics.episode_length, 1)


def test_termination_has_discount_zero_and_a_final_observation_past_the_limit():
    env = EnvPoolVecEnv(make_envpool_envs("CartPole-v1", 2, seed=1))
    env.reset()
    lengths = np.zeros(2, int)
    for _ in range(40):
        step = env.step(np.ones(2, np.int32))  # always push right: falls within ~10 steps
        lengths += 1
        if step.last.any():
            break
    i = int(np.flatnonzero(step.last)[0])
    assert step.discount[i] == 0.0
    x, _, theta, _ = step.next_obs.agent_view[i]
    assert abs(x) > 2.4 or abs(theta) > 0.2095  # CartPole's termination condition
    assert np.abs(step.observation.agent_view[i]).max() <= 0.05
    assert step.episode_metrics.episode_return[i] == lengths[i]


class FakeAtariPool:
    """envpool's gymnasium API for a scripted 2-life game; frames are (C, H, W) uint8.

    Every step scores 3 (a reward clipping must turn into 1); a life is lost on steps 2 and 4
    of a game (the second loss ends it). `reset(ids)` restarts those games, as envpool does.
    """

    def __init__(self, num_envs: int):
        from gymnasium import spaces

        self.spec = type("Spec", (), {"config": type("Config", (), {"num_envs": num_envs})})()
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0, 255, (2, 3, 3), np.uint8)
        self.t = np.zeros(num_envs, int)
        self.resets = []
        self.steps = []

    def _frames(self) -> np.ndarray:
        frames = np.zeros((len(self.t), 2, 3, 3), np.uint8)
        frames[:, 0] = self.t[:, None, None]
        frames[:, 1] = 100
        return frames

    def reset(self, env_id):
        self.resets.append(list(env_id))
        self.t[env_id] = 0
        frames = self._frames()[env_id]
        return frames, {"env_id": np.asarray(env_id), "lives": np.full(len(env_id), 2)}

    def step(self, actions, env_id=None):
        ids = np.arange(len(self.t)) if env_id is None else np.asarray(env_id)
        self.steps.append((list(np.asarray(actions)), list(ids)))
        self.t[ids] += 1
        t = self.t[ids]
        lives = np.where(t >= 4, 0, np.where(t >= 2, 1, 2))
        terminated = t == 4
        info = {"env_id": ids, "lives": lives}
        return self._frames()[ids], np.full(len(ids), 3.0), terminated, np.zeros_like(terminated), info

    def close(self):
        pass


def test_atari_lives_terminate_learning_but_not_the_reported_episode():
    pool = FakeAtariPool(num_envs=1)
    env = EnvPoolVecEnv(pool, episodic_life=True, reward_clip=True)
    first = env.reset()
    assert first.observation.agent_view.shape == (1, 3, 3, 2)  # (H, W, C)
    assert env.single_observation_space.shape == (3, 3, 2)
    steps = [env.step(np.zeros(1, np.int32)) for _ in range(5)]
    np.testing.assert_array_equal([s.reward[0] for s in steps], [1.0] * 5)  # clipped
    np.testing.assert_array_equal([s.last[0] for s in steps], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal([s.discount[0] for s in steps], [1, 0, 1, 0, 1])
    # Only the game over reports an episode, with the unclipped score of all its lives.
    np.testing.assert_array_equal([s.episode_metrics.is_terminal_step[0] for s in steps], [0, 0, 0, 1, 0])
    assert steps[3].episode_metrics.episode_return[0] == 4 * 3.0
    assert steps[3].episode_metrics.episode_length[0] == 4
    # A lost life does not restart the game; the game over does, on the same step.
    assert pool.resets == [[0], [0]]
    assert steps[1].observation.agent_view[0, 0, 0, 0] == 2  # the game goes on from frame 2
    assert steps[3].next_obs.agent_view[0, 0, 0, 0] == 4  # final frame kept
    assert steps[3].observation.agent_view[0, 0, 0, 0] == 0  # new game
    assert steps[3].observation.agent_view.dtype == np.uint8


def test_fire_after_a_lost_life_is_pressed_once_and_not_counted_as_a_step():
    pool = FakeAtariPool(num_envs=2)
    env = EnvPoolVecEnv(pool, episodic_life=True, reward_clip=True, fire_after_life_loss=True)
    env.reset()
    steps = [env.step(np.zeros(2, np.int32)) for _ in range(3)]
    # Step 2 loses a life: both envs get one FIRE (action 1) of their own, then play on.
    assert pool.steps[2] == ([1, 1], [0, 1])
    assert steps[1].last.all() and (steps[1].discount == 0).all()
    assert steps[1].observation.agent_view[0, 0, 0, 0] == 3  # after the FIRE press
    assert steps[1].next_obs.agent_view[0, 0, 0, 0] == 2  # the frame where the life was lost
    # The game ends on the third agent step (t=4 counting the press); its score counts the press.
    np.testing.assert_array_equal(steps[2].episode_metrics.is_terminal_step, True)
    np.testing.assert_array_equal(steps[2].episode_metrics.episode_return, 4 * 3.0)
    np.testing.assert_array_equal(steps[2].episode_metrics.episode_length, 3)
    np.testing.assert_array_equal([s.reward for s in steps], np.ones((3, 2)))


def test_without_episodic_life_a_lost_life_is_an_ordinary_step():
    env = EnvPoolVecEnv(FakeAtariPool(num_envs=1), episodic_life=False, reward_clip=False)
    env.reset()
    steps = [env.step(np.zeros(1, np.int32)) for _ in range(4)]
    np.testing.assert_array_equal([s.last[0] for s in steps], [0, 0, 0, 1])
    np.testing.assert_array_equal([s.reward[0] for s in steps], [3.0] * 4)


def test_real_breakout_game_spans_its_five_lives():
    cfg = OmegaConf.load(f"{CONFIG_DIR}/env/envpool/breakout.yaml")
    env = make_host_envs(cfg, num_envs=2, seed=0)
    step = env.reset()
    assert step.observation.agent_view.shape == (2, 84, 84, 4)
    assert step.observation.agent_view.dtype == np.uint8
    rng = np.random.default_rng(0)
    lasts, length = np.zeros(2, int), 0
    while not step.episode_metrics.is_terminal_step.any():  # random play: ~200 steps a game
        step = env.step(rng.integers(0, env.num_actions, 2).astype(np.int32))
        lasts += step.last
        length += 1
        assert length < 2000
    i = int(np.flatnonzero(step.episode_metrics.is_terminal_step)[0])
    assert lasts[i] == 5  # four lost lives, each a termination for learning, then game over
    assert step.discount[i] == 0.0
    assert step.episode_metrics.episode_length[i] == length


def test_every_envpool_config_builds():
    import pathlib

    for path in sorted(pathlib.Path(CONFIG_DIR, "env", "envpool").glob("*.yaml")):
        env = make_host_envs(OmegaConf.load(path), num_envs=1, seed=0)
        step = env.step(np.zeros(1, np.int32))
        assert step.reward.shape == (1,), path.name
        env.close()


def test_envpool_errors_are_clear():
    with pytest.raises(StoixConfigError, match="'Pongg-v5' is not an envpool task"):
        make_envpool_envs("Pongg-v5", 1, seed=0)
    with pytest.raises(StoixConfigError, match="set env.wrapper.episodic_life=true instead"):
        make_envpool_envs("Pong-v5", 1, seed=0, episodic_life=True)
    with pytest.raises(StoixConfigError, match="bad env.kwargs"):
        make_envpool_envs("CartPole-v1", 1, seed=0, not_an_option=3)


def test_user_code_reaches_envpool_through_the_registry_not_a_plain_import():
    # The README's environment section: `import envpool` fails in this install (MuJoCo assets
    # dropped), `envpool_registry()` gives envpool's own API. Fresh processes, so neither path
    # depends on what this test process imported before.
    import subprocess
    import sys

    plain = subprocess.run([sys.executable, "-c", "import envpool"], capture_output=True, text=True)
    assert plain.returncode != 0 and "FileNotFoundError" in plain.stderr
    supported = (
        "from stoix.wrappers.envpool import envpool_registry\n"
        "envpool = envpool_registry()\n"
        "assert 'Pong-v5' in envpool.list_all_envs() and 'CartPole-v1' in envpool.list_all_envs()\n"
        "pool = envpool.make_gymnasium('Pong-v5', num_envs=2)\n"
        "obs, _ = pool.reset()\n"
        "print(obs.shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", supported], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(2, 4, 84, 84)"
