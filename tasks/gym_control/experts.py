"""Analytic swing-up experts: energy pumping, then a linear balance controller near the top.

Each expert is multimodal on purpose: at the start of an episode, while the pole barely moves, it
kicks in a direction drawn per episode (left or right, from the episode seed), so two experts
seeing the same first observation may do opposite things; once the pole swings, pumping follows its
motion. That is the mode choice an action-chunking policy learns from these demonstrations, and
the one that naive asynchronous execution can switch between chunks.

An expert reads only the policy's state (no privileged simulator state) and plans a chunk by rolling
its own feedback law through an exact copy of the task's dynamics: ``chunk(state)`` returns the H
actions it would command if nothing disturbed the system, and advances its episode phase (the kick)
by one tick, as executing the chunk's first action does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def wrap_angle(a: float) -> float:
    """An angle in [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def episode_direction(seed: int) -> float:
    """The first kick's direction for an episode, +1 or -1, from its seed (a stream of its own, apart
    from the action-noise generator that the same seed also starts)."""
    return 1.0 if np.random.default_rng([int(seed), 7919]).random() < 0.5 else -1.0


@dataclass
class KickPhase:
    """Where an episode is in its opening kick: ticks kicked so far, and whether pumping has begun."""

    ticks: int = 0
    done: bool = False


class SwingUpExpert:
    """Shared logic: the per-episode direction, the kick phase and the chunk rollout. Subclasses
    give the dynamics (``_to_q``, ``_step``) and the feedback law (``_feedback``)."""

    action_dim = 1
    kick_max_ticks = 6  # the kick lasts until the pole moves fast enough, at most this many ticks
    kick_until_speed = 1.0  # rad/s

    def __init__(self, chunk_size: int = 8, direction: float | None = None) -> None:
        self.chunk_size = int(chunk_size)
        self.fixed_direction = direction
        self.direction = 1.0 if direction is None else float(direction)
        self.phase = KickPhase()

    def reset(self, seed: int) -> None:
        """A new episode: the kick direction drawn from ``seed`` (unless fixed) and the kick re-armed."""
        self.direction = episode_direction(seed) if self.fixed_direction is None else float(self.fixed_direction)
        self.phase = KickPhase()

    def _kick(self, pole_speed: float, phase: KickPhase) -> bool:
        """Whether this tick is still part of the opening kick (updates ``phase``)."""
        if not phase.done and abs(pole_speed) < self.kick_until_speed and phase.ticks < self.kick_max_ticks:
            phase.ticks += 1
            return True
        phase.done = True
        return False

    def chunk(self, state: np.ndarray) -> np.ndarray:
        """The planned (H, 1) action chunk from ``state``; advances the episode phase by one tick."""
        q = self._to_q(np.asarray(state, np.float64).ravel())
        phase = KickPhase(self.phase.ticks, self.phase.done)
        out = np.empty((self.chunk_size, self.action_dim), np.float32)
        for i in range(self.chunk_size):
            u = self._feedback(q, phase)
            if i == 0:
                self.phase = KickPhase(phase.ticks, phase.done)
            out[i] = u
            q = self._step(q, u)
        return out

    def chunk_after(self, state: np.ndarray, committed: np.ndarray) -> np.ndarray:
        """The (H, 1) chunk whose first ``len(committed)`` actions are ``committed`` (already sent
        while this chunk was being planned) and whose rest is the expert's plan from the state those
        actions lead to, predicted through the exact dynamics: inpainting with a perfect model, the
        best a method that conditions the new chunk on the committed actions can do (the noise on
        those ticks stays unknown to it). Advances the episode phase as ``chunk`` does."""
        committed = np.asarray(committed, np.float64).reshape(-1, self.action_dim)[: self.chunk_size]
        if len(committed) == 0:
            return self.chunk(state)
        q = self._to_q(np.asarray(state, np.float64).ravel())
        phase = KickPhase(self.phase.ticks, self.phase.done)
        for i, u in enumerate(committed[:, 0]):
            self._kick(abs(float(q[-1])), phase)  # the kick's clock runs on during the committed ticks
            if i == 0:
                first_tick = KickPhase(phase.ticks, phase.done)
            q = self._step(q, float(u))
        out = np.empty((self.chunk_size, self.action_dim), np.float32)
        out[: len(committed)] = committed
        for i in range(len(committed), self.chunk_size):
            u = self._feedback(q, phase)
            out[i] = u
            q = self._step(q, u)
        self.phase = first_tick
        return out

    def _to_q(self, state: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, q: np.ndarray, u: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _feedback(self, q: np.ndarray, phase: KickPhase) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class PendulumSwingUp(SwingUpExpert):
    """Gymnasium ``Pendulum-v1``: state (cos th, sin th, th_dot), th = 0 upright, torque in [-2, 2].

    Gravity's torque (15 sin th in angular acceleration) beats the motor's (3 u <= 6) beyond
    0.41 rad, so from below the expert pumps: full torque along the swing while the energy
    ``E = th_dot^2 / 30 + cos th`` (1 at rest upright) is short, full braking torque once it exceeds 1,
    and a PD balance (angular acceleration -15 th - 6 th_dot) within 0.45 rad of the top."""

    g, dt, max_speed, max_torque = 10.0, 0.05, 8.0, 2.0  # Pendulum-v1's constants
    catch_rad, catch_speed = 0.45, 3.5
    kp, kd = 10.0, 2.0

    def _to_q(self, state: np.ndarray) -> np.ndarray:
        return np.array([math.atan2(state[1], state[0]), state[2]])

    def _step(self, q: np.ndarray, u: float) -> np.ndarray:
        """Pendulum-v1's own integration (m = l = 1)."""
        th, thd = q
        u = min(max(u, -self.max_torque), self.max_torque)
        thd = thd + (3.0 * self.g / 2.0 * math.sin(th) + 3.0 * u) * self.dt
        thd = min(max(thd, -self.max_speed), self.max_speed)
        return np.array([wrap_angle(th + thd * self.dt), thd])

    def _feedback(self, q: np.ndarray, phase: KickPhase) -> float:
        th, thd = wrap_angle(float(q[0])), float(q[1])
        umax = self.max_torque
        if math.cos(th) > math.cos(self.catch_rad) and abs(thd) < self.catch_speed:
            phase.done = True
            return min(max(-(self.kp * th + self.kd * thd), -umax), umax)
        if self._kick(thd, phase):
            return umax * self.direction
        energy = thd * thd / (3.0 * self.g) + math.cos(th)
        if energy < 1.0:
            return umax * (math.copysign(1.0, thd) if thd != 0.0 else self.direction)
        return min(max(-10.0 * (energy - 1.0) * math.copysign(umax, thd), -umax), umax)


class CartpoleSwingUp(SwingUpExpert):
    """dm_control ``cartpole-swingup`` (through shimmy): state (x, cos th, sin th, x_dot, th_dot),
    th = 0 upright, force command in [-1, 1] (x 10 N). The episode starts at rest hanging down, so
    the kick's direction is the whole choice.

    Pumping is the Astrom-Furuta energy law on the cart (``k_energy * E * sign(th_dot cos th)``, E the
    pole's energy per unit inertia, 0 upright at rest) with a spring-damper keeping the cart near the
    centre; within 0.5 rad of the top a discrete LQR, linearised from the MuJoCo model at the control
    rate, balances. The chunk rollout steps a private copy of the same MuJoCo model."""

    catch_rad = 0.5
    k_energy, k_x, k_v = 0.3, 1.0, 1.0
    gravity_per_inertia = 14.7  # m g l_c / I for the 1 m, 0.1 kg pole about its hinge (3 g / 2l)

    def __init__(self, chunk_size: int = 8, direction: float | None = None, control_timestep_s: float = 0.05) -> None:
        super().__init__(chunk_size, direction)
        import mujoco
        from dm_control.suite import cartpole

        self._mujoco = mujoco
        xml, assets = cartpole.get_model_and_assets()
        self.model = mujoco.MjModel.from_xml_string(xml.decode(), assets)
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(control_timestep_s / self.model.opt.timestep))
        self.gain = self._lqr_gain()

    def _to_q(self, state: np.ndarray) -> np.ndarray:
        return np.array([state[0], math.atan2(state[2], state[1]), state[3], state[4]])

    def _step(self, q: np.ndarray, u: float) -> np.ndarray:
        d = self.data
        d.qpos[:], d.qvel[:], d.ctrl[:] = q[:2], q[2:], min(max(u, -1.0), 1.0)
        d.act[:] = 0.0
        for _ in range(self.substeps):
            self._mujoco.mj_step(self.model, d)
        return np.r_[d.qpos, d.qvel]

    def _lqr_gain(self) -> np.ndarray:
        """Discrete LQR gain (1, 4) at the upright, from a central-difference linearisation of one
        control tick (the model integrates with RK4, which MuJoCo's own FD linearisation refuses)."""
        import scipy.linalg

        eps, z0 = 1e-5, np.zeros(4)
        a = np.stack(
            [(self._step(z0 + eps * e, 0.0) - self._step(z0 - eps * e, 0.0)) / (2 * eps) for e in np.eye(4)], axis=1
        )
        b = ((self._step(z0, eps) - self._step(z0, -eps)) / (2 * eps))[:, None]
        q, r = np.diag([1.0, 10.0, 0.1, 0.1]), np.array([[1.0]])
        p = scipy.linalg.solve_discrete_are(a, b, q, r)
        return np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)

    def _feedback(self, q: np.ndarray, phase: KickPhase) -> float:
        x, th, xd, thd = float(q[0]), wrap_angle(float(q[1])), float(q[2]), float(q[3])
        if math.cos(th) > math.cos(self.catch_rad):
            phase.done = True
            return min(max(-float((self.gain @ np.array([x, th, xd, thd]))[0]), -1.0), 1.0)
        if self._kick(thd, phase):
            return self.direction
        energy = 0.5 * thd * thd + self.gravity_per_inertia * (math.cos(th) - 1.0)
        u = self.k_energy * energy * math.copysign(1.0, thd * math.cos(th)) - self.k_x * x - self.k_v * xd
        return min(max(u, -1.0), 1.0)


EXPERTS = {"pendulum": PendulumSwingUp, "cartpole_swingup": CartpoleSwingUp}


def make_expert(task: str, chunk_size: int = 8, direction: float | None = None) -> SwingUpExpert:
    """The expert of a task in ``tasks.gym_control.tasks.TASKS`` (``direction`` fixes the kick)."""
    if task not in EXPERTS:
        raise ValueError(f"no expert for gym control task {task!r}; known: {sorted(EXPERTS)}")
    return EXPERTS[task](chunk_size=chunk_size, direction=direction)
