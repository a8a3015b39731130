"""A scripted expert for the sim transfer-cube task (privileged: it reads the cube's start pose,
and on the sliding-cube task its velocity and the episode's strategy draw).

It plans the whole episode once — right arm picks the cube, lifts it to the middle, the left arm
takes it over and the right arm lets go, after ACT's scripted ``PickAndTransferPolicy`` — as
end-effector waypoints, interpolates them per control tick (positions linearly, orientations by
slerp) and turns each pose into joints by damped-least-squares IK. The plan is cached per episode
(episode id + cube start pose + control rate), so the policy is stateless otherwise and works in
an inference process of its own: ``predict`` just slices ``plan[step : step + H]``.

Model space equals robot space (configure the identity normalizer): joints in rad, grippers
normalized 0 (closed) .. 1 (open).
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.guidance import padded_prev, prefix_weights, select_coherent
from robots.sim import aloha
from services.errors import ConfigError
from services.knobs import PositiveFloat, PositiveInt
from tasks.transfer_cube.ik import ArmIK

mujoco = aloha.mujoco
log = logging.getLogger(__name__)

# Where the left gripper takes the cube over (world frame, metres), as in ACT.
MEET_XYZ = np.array([0.0, 0.5, 0.25])
# ACT's waypoint times are in 50 Hz simulation steps; we convert them to seconds.
ACT_DT_S = 0.02
# The late-strategy demonstrator (``hover_ends_s``): hover height over the cube (m), when the hover
# pose is reached (s), the drop to its side (m over the cube, s) and the move into it and the close (s).
HOVER_M = 0.08
HOVER_REACH_S = 1.2
LOW_SIDE_M = 0.02
DROP_S = 0.3
INTO_S = 0.4
CLOSE_S = 0.8
# Hover ends a plan can take: after the hover pose is reached, and closed on the cube before the
# lift towards the meet point starts (ACT step 205).
HOVER_END_RANGE_S = (HOVER_REACH_S, 205 * ACT_DT_S - DROP_S - INTO_S - CLOSE_S)


def hover_end_problem(end_s: float) -> str | None:
    """Why a plan cannot take hover end ``end_s`` (one phrase), or None when it can: the one check
    behind the start-time check, the constructor and the planner."""
    lo, hi = HOVER_END_RANGE_S
    if lo < float(end_s) <= hi + 1e-9:
        return None
    return f"{end_s} s is outside ({lo}, {hi:.2f}] (after the hover pose is reached, and closed on the cube before the lift)"


# The posterior compares the observed right arm with each plan over this many past ticks and now:
# the position-controlled arm lags its commands by a few ticks, so the command of this very tick is
# not where the arm is yet.
ARM_LAG_TICKS = 4

# Rotation from the mocap frame of the EE sim to each arm's gripper_link frame.
_RZ180 = np.diag([-1.0, -1.0, 1.0])
MOCAP_TO_LINK = {"left": np.eye(3), "right": _RZ180}


def _axis_quat(axis: Sequence[float], degrees: float) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, dtype=np.float64), np.deg2rad(degrees))
    return quat


def _quat_to_mat(quat: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def _mat_to_quat(mat: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(mat, dtype=np.float64).reshape(-1))
    return quat


def _slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        out = q0 + alpha * (q1 - q0)
        return out / np.linalg.norm(out)
    theta = np.arccos(dot)
    return (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


@dataclass(frozen=True)
class Waypoint:
    """A TCP pose target at time ``t_s`` (seconds from home): position, mocap-frame quaternion,
    gripper (normalized, 0 closed .. 1 open). ``quat=None`` keeps the arm's home orientation.
    Segments are joint-space moves unless the target waypoint says ``linear``."""

    t_s: float
    xyz: np.ndarray
    quat: np.ndarray | None
    gripper: float
    linear: bool = False  # reach it on a straight TCP line (else by joint interpolation)


def transfer_cube_waypoints(
    cube_xyz: np.ndarray,
    home_xyz: dict[str, np.ndarray],
    home_gripper: float,
    approach_x: float = 0.0,
    cube_velocity: np.ndarray | None = None,
    slide_until_s: float = 0.0,
    hover_end_s: float | None = None,
) -> dict[str, list[Waypoint]]:
    """ACT's PickAndTransferPolicy waypoints (times in seconds) for a cube starting at ``cube_xyz``.

    Changed from ACT: the lift ends at step 205 instead of 200, so that the arm stays under the
    5 deg/tick slew limit at 20 Hz; the first pose is the robot's home (ACT starts from its mocap);
    ``approach_x`` (m) puts the pre-grasp pose that far beside the cube along x, so the gripper
    comes down on it diagonally from one side (0: straight down, as in ACT). A sliding cube
    (``cube_velocity`` m/s until ``slide_until_s``, from ``cube_xyz`` at home) is tracked: each
    right-arm waypoint aims at where the cube is at that waypoint's time, and since it moves
    linearly the straight descent between two of them follows it tick by tick.

    ``hover_end_s`` (a demonstrator that shows its strategy late): the right arm first reaches a
    hover pose straight above the cube (``HOVER_M`` over it, by ``HOVER_REACH_S``) and follows it
    there until ``hover_end_s``, so until then nothing in its motion says which side it will take;
    then it drops beside the cube on its ``approach_x`` side (``LOW_SIDE_M`` over it, in
    ``DROP_S``) and moves into it (in ``INTO_S``); ``HOVER_END_RANGE_S`` bounds it (the grasp must
    close before the lift).
    """
    t = lambda steps: steps * ACT_DT_S  # noqa: E731
    velocity = np.zeros(3) if cube_velocity is None else np.asarray(cube_velocity, np.float64)
    cube_at = lambda t_s: cube_xyz + velocity * float(np.clip(t_s, 0.0, slide_until_s))  # noqa: E731
    pick_quat = _axis_quat([0.0, 1.0, 0.0], -60.0)  # right gripper tilted 60 deg down
    meet_left_quat = _axis_quat([1.0, 0.0, 0.0], 90.0)  # left jaws vertical
    ident = np.array([1.0, 0.0, 0.0, 0.0])
    meet = MEET_XYZ
    left = [
        Waypoint(t(0), home_xyz["left"], None, home_gripper),
        Waypoint(t(100), meet + [-0.1, 0, -0.02], meet_left_quat, 1.0),  # approach meet point
        Waypoint(t(260), meet + [0.02, 0, -0.02], meet_left_quat, 1.0, linear=True),  # move onto the cube
        Waypoint(t(310), meet + [0.02, 0, -0.02], meet_left_quat, 0.0),  # close gripper
        Waypoint(t(360), meet + [-0.1, 0, -0.02], ident, 0.0),  # pull left
        Waypoint(t(400), meet + [-0.1, 0, -0.02], ident, 0.0),  # stay
    ]
    if hover_end_s is None:
        grasp = [
            Waypoint(t(90), cube_at(t(90)) + [approach_x, 0, 0.08], pick_quat, 1.0),  # above the cube
            Waypoint(t(130), cube_at(t(130)) + [0, 0, -0.015], pick_quat, 1.0, linear=True),  # go down
            Waypoint(t(170), cube_at(t(170)) + [0, 0, -0.015], pick_quat, 0.0),  # close gripper
        ]
    else:
        end = float(hover_end_s)
        down = end + DROP_S + INTO_S
        problem = hover_end_problem(end)
        if problem:
            raise ValueError(f"hover_end_s: {problem}")
        grasp = [
            Waypoint(HOVER_REACH_S, cube_at(HOVER_REACH_S) + [0, 0, HOVER_M], pick_quat, 1.0),  # over it
            Waypoint(end, cube_at(end) + [0, 0, HOVER_M], pick_quat, 1.0, linear=True),  # follow it there
            Waypoint(
                end + DROP_S, cube_at(end + DROP_S) + [approach_x, 0, LOW_SIDE_M], pick_quat, 1.0, linear=True
            ),  # drop beside it: the side shows from here on
            Waypoint(down, cube_at(down) + [0, 0, -0.015], pick_quat, 1.0, linear=True),  # into it
            Waypoint(down + CLOSE_S, cube_at(down) + [0, 0, -0.015], pick_quat, 0.0),  # close gripper
        ]
    right = [
        Waypoint(t(0), home_xyz["right"], None, home_gripper),
        *grasp,
        Waypoint(t(205), meet + [0.05, 0, 0], pick_quat, 0.0),  # lift towards the meet point
        Waypoint(t(220), meet, pick_quat, 0.0),  # meet point
        Waypoint(t(310), meet, pick_quat, 1.0),  # open gripper
        Waypoint(t(360), meet + [0.1, 0, 0], pick_quat, 1.0),  # move right
        Waypoint(t(400), meet + [0.1, 0, 0], pick_quat, 1.0),  # stay
    ]
    return {"left": left, "right": right}


class ScriptedTransferCube:
    """Privileged scripted expert for the sim transfer-cube task (robot space = model space).

    ``hz`` is the control rate the plan is timed for when the observation does not say
    (``info['hz']`` from the sim robot takes precedence). ``max_delta_deg`` (arms, degrees per
    tick) and ``max_gripper_delta`` (normalized per tick) bound the plan's steps, as the robot's
    slew limits do. ``normalizer`` is accepted for config symmetry and not used: configure the
    identity normalizer.

    Strategies: on a task that draws one per episode (``transfer_cube_slide``), the demonstrator's
    strategy is one of ``approach_offsets_m`` x ``hover_ends_s`` (empty: no hover; see
    ``transfer_cube_waypoints``), picked by the episode's draw. ``hidden_strategy`` says what the
    expert knows of it: ``drawn`` follows the draw (the demonstrator); ``posterior`` does not read
    it, and acts as an ideally trained multimodal policy would: each chunk follows a strategy drawn
    at random among those whose plan agrees with the arm's observed motion so far (within
    ``consistency_tol_rad``), so two chunks from one observation can take different strategies
    until the arm's motion shows one. With ``guidance: select`` it keeps, among those, the one most
    coherent with the previous chunk (a consistency method with perfect candidates). It measures
    what mode switching alone costs naive asynchronous execution on a task, with no learning error.
    """

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check: at least one approach offset to plan with, and hover ends a plan can take."""
        if not list(node.get("approach_offsets_m", (0.0,)) or ()):
            raise ConfigError(f"{path}.approach_offsets_m: needs at least one offset (e.g. [0.0])")
        for end in list(node.get("hover_ends_s", ()) or ()):
            problem = hover_end_problem(end)
            if problem:
                raise ConfigError(f"{path}.hover_ends_s: {problem}")

    def __init__(
        self,
        chunk_size: int = 50,
        action_dim: int = 14,
        state_dim: int = 14,
        camera_names: Sequence[str] = (),
        normalizer: Any = None,
        hz: PositiveFloat = 20.0,
        max_delta_deg: PositiveFloat = 5.0,
        max_gripper_delta: PositiveFloat = 0.1,
        cache_size: PositiveInt = 8,
        approach_offsets_m: Sequence[float] = (0.0,),
        replan_s: PositiveFloat = 0.5,
        hover_ends_s: Sequence[float] = (),
        hidden_strategy: Literal["drawn", "posterior"] = "drawn",
        consistency_tol_rad: PositiveFloat = 0.03,
    ) -> None:
        if action_dim != 14 or state_dim != 14:
            raise ValueError(f"scripted expert is 14-dim (got {action_dim}, {state_dim})")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
        if camera_names:
            raise ValueError("the scripted expert uses no cameras; set camera_names: []")
        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size),
            action_dim=14,
            state_dim=14,
            camera_names=(),
            state_history=1,
            supports_vjp=False,
            needs_privileged=True,
            supports_select=hidden_strategy == "posterior",
        )
        self.hz = float(hz)
        self.max_delta_deg = float(max_delta_deg)
        self.max_gripper_delta = float(max_gripper_delta)
        self.cache_size = int(cache_size)
        if not approach_offsets_m:
            raise ValueError("approach_offsets_m needs at least one offset")
        if replan_s <= 0:
            raise ValueError(f"replan_s must be > 0 (got {replan_s})")
        self.approach_offsets_m = tuple(float(x) for x in approach_offsets_m)
        self.replan_s = float(replan_s)
        self.hover_ends_s = tuple(float(x) for x in hover_ends_s)
        problems = [p for p in map(hover_end_problem, self.hover_ends_s) if p]
        if problems:
            raise ValueError(f"hover_ends_s: {problems[0]}")
        if hidden_strategy not in ("drawn", "posterior"):
            raise ValueError(f"hidden_strategy must be 'drawn' or 'posterior' (got {hidden_strategy!r})")
        self.hidden_strategy = hidden_strategy
        self.consistency_tol_rad = float(consistency_tol_rad)
        self._ik: ArmIK | None = None
        self._plans: OrderedDict[tuple, np.ndarray] = OrderedDict()

    @classmethod
    def supports_select_guidance(cls, node: Any) -> bool:
        """``guidance: select`` with ``hidden_strategy: posterior`` (several strategies to pick from)."""
        return str(node.get("hidden_strategy", "drawn")) == "posterior"

    # --- planning ---------------------------------------------------------------------------
    def _solver(self) -> ArmIK:
        if self._ik is None:
            self._ik = ArmIK(aloha.load_model())
        return self._ik

    def strategies(self) -> list[tuple[float, float | None]]:
        """Every (approach offset, hover end or None) the demonstrator may follow on a task that
        draws its strategy, in the order a draw indexes them."""
        hovers: tuple[float | None, ...] = self.hover_ends_s or (None,)
        return [(x, h) for x in self.approach_offsets_m for h in hovers]

    def strategy_for(self, strategy_draw: float) -> tuple[float, float | None]:
        """The strategy an episode's draw in [0, 1) picks (uniform over ``strategies()``)."""
        options = self.strategies()
        return options[min(len(options) - 1, int(float(strategy_draw) * len(options)))]

    def approach_for(self, cube_pose: np.ndarray, strategy_draw: float | None = None) -> float:
        """The strategy for a plan to ``cube_pose``: one of ``approach_offsets_m``. A task that
        draws the strategy per episode (``strategy_draw`` in [0, 1), from the episode's RNG:
        independent of the observation) picks it from that draw; otherwise it comes from a hash of
        the pose (so every process and every call agree on it)."""
        if len(self.approach_offsets_m) == 1:
            return self.approach_offsets_m[0]
        if strategy_draw is not None:
            return self.strategy_for(strategy_draw)[0]
        key = np.round(np.asarray(cube_pose[:3], dtype=np.float64), 6).tobytes()
        rng = np.random.default_rng(zlib.crc32(key))
        return self.approach_offsets_m[int(rng.integers(len(self.approach_offsets_m)))]

    def plan(
        self,
        cube_init_pose: np.ndarray,
        hz: float | None = None,
        approach_x: float | None = None,
        cube_velocity: np.ndarray | None = None,
        slide_until_s: float = 0.0,
        hover_end_s: float | None = None,
    ) -> np.ndarray:
        """The whole episode's joint trajectory, (T, 14) float32, one row per control tick.

        Row 0 is the home pose; row k is the command for tick k (sent after observing step k).
        ``approach_x`` None: the strategy ``approach_for`` draws for this pose. A sliding cube:
        ``cube_velocity`` (m/s) until ``slide_until_s`` (s), tracked by the right arm.
        """
        if approach_x is None:
            approach_x = self.approach_for(cube_init_pose)
        hz = self.hz if hz is None else float(hz)
        ik = self._solver()
        home = aloha.home_joints14()
        q_home = {"left": home[0:6], "right": home[7:13]}
        home_pose = {arm: ik.tcp_pose(arm, q_home[arm]) for arm in ("left", "right")}
        waypoints = transfer_cube_waypoints(
            np.asarray(cube_init_pose[:3], dtype=np.float64),
            {arm: home_pose[arm][0] for arm in home_pose},
            float(home[6]),
            float(approach_x),
            cube_velocity,
            float(slide_until_s),
            hover_end_s,
        )
        n_ticks = int(round(waypoints["left"][-1].t_s * hz)) + 1
        plan = np.zeros((n_ticks, 14))
        for arm, cols, gcol in (("left", slice(0, 6), 6), ("right", slice(7, 13), 13)):
            wps = waypoints[arm]
            home_rot = home_pose[arm][1]
            rots = [home_rot if wp.quat is None else _quat_to_mat(wp.quat) @ MOCAP_TO_LINK[arm] for wp in wps]
            quats = [_mat_to_quat(r) for r in rots]
            worst = 0.0
            q_wp = q_home[arm]
            for i in range(len(wps) - 1):
                a, b = wps[i], wps[i + 1]
                last = i == len(wps) - 2
                k_lo = int(np.ceil(a.t_s * hz - 1e-9))
                k_hi = n_ticks if last else int(np.ceil(b.t_s * hz - 1e-9))
                if b.linear:
                    # Straight-line TCP motion: IK per tick, warm-started from the last tick.
                    q = q_wp
                    for k in range(k_lo, k_hi):
                        alpha = float(np.clip((k / hz - a.t_s) / (b.t_s - a.t_s), 0.0, 1.0))
                        xyz = (1 - alpha) * a.xyz + alpha * b.xyz
                        rot = _quat_to_mat(_slerp(quats[i], quats[i + 1], alpha))
                        q, pos_err, _ = ik.solve(arm, xyz, rot, q)
                        worst = max(worst, pos_err)
                        plan[k, cols] = q
                        plan[k, gcol] = (1 - alpha) * a.gripper + alpha * b.gripper
                    q_end, pos_err, _ = ik.solve(arm, b.xyz, rots[i + 1], q)
                else:
                    # Joint-space move between IK solutions of the two waypoints: it avoids
                    # tracking through the wrist singularity (wrist_angle crossing 0 aligns
                    # forearm_roll and wrist_rotate), where per-tick IK would spin both rolls.
                    q_end, pos_err = self._solve_waypoint(ik, arm, b.xyz, rots[i + 1], q_wp)
                    for k in range(k_lo, k_hi):
                        alpha = float(np.clip((k / hz - a.t_s) / (b.t_s - a.t_s), 0.0, 1.0))
                        plan[k, cols] = (1 - alpha) * q_wp + alpha * q_end
                        plan[k, gcol] = (1 - alpha) * a.gripper + alpha * b.gripper
                worst = max(worst, pos_err)
                q_wp = q_end
            if worst > 5e-3:
                log.warning("scripted expert: %s arm IK misses a waypoint by %.1f mm", arm, worst * 1e3)
        return self._rate_limited(plan, warn=True).astype(np.float32)

    def _rate_limited(self, plan: np.ndarray, warn: bool) -> np.ndarray:
        """Last line of defence: never plan a move faster than the robot's slew limit (the
        safety filter would clip it anyway, and then the arms would lag the plan)."""
        limit = np.full(14, np.deg2rad(self.max_delta_deg))
        limit[[6, 13]] = self.max_gripper_delta
        steps = np.diff(plan, axis=0)
        if np.any(np.abs(steps) > limit + 1e-9):
            if warn:
                log.warning("scripted expert: plan exceeds the slew limit; rate-limiting it")
            plan = np.array(plan, dtype=np.float64)
            for k in range(1, len(plan)):
                plan[k] = plan[k - 1] + np.clip(plan[k] - plan[k - 1], -limit, limit)
        return plan

    def replanned(self, before: np.ndarray, after: np.ndarray, shift_tick: int, hz: float) -> np.ndarray:
        """The plan after a cube shift at ``shift_tick``: ``before`` up to it, a joint-space blend
        of ``replan_s`` from ``before[shift_tick]`` to ``after[shift_tick]``, then ``after`` from
        ``shift_tick`` on, that much late; rate-limited like any plan."""
        tau = int(np.clip(shift_tick, 0, len(before) - 1))
        blend = max(1, int(round(self.replan_s * hz)))
        alpha = (np.arange(1, blend + 1) / blend)[:, None]
        ramp = (1 - alpha) * before[tau] + alpha * after[min(tau, len(after) - 1)]
        plan = np.concatenate([before[:tau], ramp, after[tau:]], axis=0)
        return self._rate_limited(plan, warn=False).astype(np.float32)

    @staticmethod
    def _solve_waypoint(
        ik: ArmIK, arm: str, xyz: np.ndarray, rot: np.ndarray, q_prev: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """IK for one waypoint: the converged solution closest to ``q_prev`` among a few seeds
        (the previous waypoint's joints, and it with both rolls zeroed and the wrist up/down)."""
        seeds = [np.asarray(q_prev, dtype=np.float64)]
        for wrist in (0.5, -0.5, 1.0):
            seed = seeds[0].copy()
            seed[3], seed[4], seed[5] = 0.0, wrist, 0.0
            seeds.append(seed)
        best: tuple[float, float, np.ndarray] | None = None
        for seed in seeds:
            q, pos_err, rot_err = ik.solve(arm, xyz, rot, seed)
            converged = pos_err < 2e-3 and rot_err < 2e-2
            score = (0.0 if converged else 1e3 + pos_err) + float(np.linalg.norm(q - q_prev))
            if best is None or score < best[0]:
                best = (score, pos_err, q)
        assert best is not None
        return best[2], best[1]

    def _cached(self, key: tuple, make) -> np.ndarray:
        plan = self._plans.get(key)
        if plan is None:
            plan = make()
            self._plans[key] = plan
            while len(self._plans) > self.cache_size:
                self._plans.popitem(last=False)
        return plan

    def _cached_plan(self, info: dict[str, Any]) -> np.ndarray:
        """The plan the expert follows at ``info['step']``: the start pose's, or after a cube
        shift (once the step reaches it) the replanned one."""
        try:
            cube = np.asarray(info["cube_init_pose"], dtype=np.float64)
        except KeyError as exc:
            raise KeyError("scripted expert needs privileged info['cube_init_pose'] (sim robot only)") from exc
        hz = float(info.get("hz", self.hz))
        until_s = float(info.get("slide_until_s", 0.0))
        if until_s > 0.0:  # a sliding cube: its motion and the episode's strategy draw are privileged info
            return self._strategy_plan(info, self.strategy_for(float(info["strategy_draw"])))
        key = (info.get("episode"), tuple(np.round(cube, 9)), hz)
        plan = self._cached(key, lambda: self.plan(cube, hz))
        shift_tick = int(info.get("shift_tick", -1))
        if shift_tick < 0 or int(info.get("step", 0)) < shift_tick:
            return plan
        moved = np.asarray(info["cube_shift_pose"], dtype=np.float64)
        return self._cached(
            key + (shift_tick, tuple(np.round(moved, 9))),
            lambda: self.replanned(plan, self.plan(moved, hz), shift_tick, hz),
        )

    def _strategy_plan(self, info: dict[str, Any], strategy: tuple[float, float | None]) -> np.ndarray:
        """The plan of one strategy for this episode's sliding cube."""
        cube = np.asarray(info["cube_init_pose"], dtype=np.float64)
        hz = float(info.get("hz", self.hz))
        until_s = float(info["slide_until_s"])
        velocity = np.asarray(info["cube_velocity"], dtype=np.float64)
        key = (info.get("episode"), tuple(np.round(cube, 9)), hz, tuple(np.round(velocity, 9)), until_s, strategy)
        approach_x, hover_end = strategy
        return self._cached(key, lambda: self.plan(cube, hz, approach_x, velocity, until_s, hover_end))

    def consistent_plans(self, obs: PolicyInput) -> list[np.ndarray]:
        """``hidden_strategy: posterior``: the plans of every strategy whose right arm agrees with
        the observed one (the closest, and any within ``consistency_tol_rad`` of it): the
        strategies the arm's motion so far has not ruled out. Each plan is compared with the
        observed joints over the last ``ARM_LAG_TICKS`` ticks and this one (the arm lags its commands)."""
        info = obs.info
        step = int(info.get("step", 0))
        joints = np.asarray(obs.state, dtype=np.float64).reshape(-1, 14)[-1, 7:14]
        plans = [self._strategy_plan(info, strategy) for strategy in self.strategies()]
        ticks = np.arange(max(0, step - ARM_LAG_TICKS), step + 1)
        gaps = [
            float(np.min(np.max(np.abs(plan[np.clip(ticks, 0, len(plan) - 1), 7:14] - joints), axis=1)))
            for plan in plans
        ]
        best = min(gaps)
        return [plan for plan, gap in zip(plans, gaps) if gap <= best + self.consistency_tol_rad]

    def _chunk(self, plan: np.ndarray, step: int) -> np.ndarray:
        """``plan[step : step + H]``, padded with the final pose."""
        idx = np.clip(np.arange(step, step + self.metadata.chunk_size), 0, len(plan) - 1)
        return plan[idx].copy()

    def _posterior(self, info: dict[str, Any]) -> bool:
        return self.hidden_strategy == "posterior" and float(info.get("slide_until_s", 0.0)) > 0.0

    # --- policy protocol --------------------------------------------------------------------
    def predict(self, obs: PolicyInput) -> np.ndarray:
        """``plan[step : step + H]``, (H, 14) float32. With ``hidden_strategy: posterior``, the plan
        of a strategy drawn uniformly among ``consistent_plans`` (seeded by the episode and the step,
        so that every method and delay sees the same draws)."""
        step = int(obs.info.get("step", 0))
        if not self._posterior(obs.info):
            return self._chunk(self._cached_plan(obs.info), step)
        plans = self.consistent_plans(obs)
        key = (obs.info.get("episode"), round(float(obs.info["strategy_draw"]), 9), step)
        return self._chunk(plans[int(np.random.default_rng(zlib.crc32(repr(key).encode())).integers(len(plans)))], step)

    def guided_inference(
        self,
        obs: PolicyInput,
        prev_chunk: np.ndarray,
        delay: int = 0,
        execute_horizon: int = 1,
        guidance: Any = "none",
        schedule: Any = "exp",
        *args: Any,
        **kwargs: Any,
    ) -> np.ndarray:
        """Slices of one fixed plan already agree with the previous chunk (``prev_chunk[:delay]``
        equals the new chunk's first ``delay`` actions whenever the step counter advanced by the
        actions consumed), so ``drawn`` needs no guidance: this is ``predict``. ``posterior`` with
        ``guidance: select``: among ``consistent_plans``, the one closest to ``prev_chunk`` under
        RTC's soft mask (``policies.guidance.select_coherent``); any other guidance: ``predict``."""
        if not (self._posterior(obs.info) and str(guidance) == "select"):
            return self.predict(obs)
        step = int(obs.info.get("step", 0))
        horizon = self.metadata.chunk_size
        candidates = np.stack([self._chunk(plan, step) for plan in self.consistent_plans(obs)])
        prev = padded_prev(np.asarray(prev_chunk)[:horizon], horizon, 14)
        weights = prefix_weights(horizon, int(delay), int(execute_horizon), str(schedule))
        return candidates[select_coherent(candidates, prev, weights)]

    def warmup(self) -> None:
        """Nothing to compile; the first plan of an episode takes ~0.1-0.5 s of IK."""

    def freeze(self) -> None:
        """No parameters."""
