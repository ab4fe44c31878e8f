"""The iiwa14 MJCF against the published KUKA LBR iiwa 14 R820 data.

Expected values are computed here from the published tables (note section 4:
menagerie/Drake kinematics and inertias, KUKA data-sheet limits) with a plain
forward-kinematics loop, independently of MuJoCo.
"""

import numpy as np
import pytest

from robot.envs import ASSETS, HOME_QPOS, mujoco

# (pos in parent frame [m], quat w x y z unnormalised) for link1..link7.
LINK_OFFSETS = [
    ((0, 0, 0.1575), (1, 0, 0, 0)),
    ((0, 0, 0.2025), (0, 0, 1, 1)),
    ((0, 0.2045, 0), (0, 0, 1, 1)),
    ((0, 0, 0.2155), (1, 1, 0, 0)),
    ((0, 0.1845, 0), (0, 0, 1, 1)),
    ((0, 0, 0.2155), (1, 1, 0, 0)),
    ((0, 0.081, 0), (0, 0, 1, 1)),
]
FLANGE_IN_LINK7 = (0, 0, 0.045)
LINK_LENGTHS = [0.1575, 0.2025, 0.2045, 0.2155, 0.1845, 0.2155, 0.081, 0.045]

# Body masses [kg], COMs and diagonal inertias [kg m^2], base first.
MASSES = [5, 5.76, 6.35, 3.5, 3.5, 3.5, 1.8, 1.2]
COMS = [(-0.1, 0, 0.07), (0, -0.03, 0.12), (0.0003, 0.059, 0.042), (0, 0.03, 0.13),
        (0, 0.067, 0.034), (0.0001, 0.021, 0.076), (0, 0.0006, 0.0004), (0, 0, 0.02)]
INERTIAS = [(0.05, 0.06, 0.03), (0.0333, 0.033, 0.0123), (0.0305, 0.0304, 0.011), (0.025, 0.0238, 0.0076),
            (0.017, 0.0164, 0.006), (0.01, 0.0087, 0.00449), (0.0049, 0.0047, 0.0036), (0.001, 0.001, 0.001)]

# KUKA data sheet: joint ranges [deg], max speeds [deg/s], torque limits [N m].
RANGE_DEG = [170, 120, 170, 120, 170, 120, 175]
SPEED_DEG_S = [85, 85, 100, 75, 130, 135, 135]
TORQUE_NM = [320, 320, 176, 176, 110, 40, 40]


def quat_to_matrix(quat):
    w, x, y, z = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def forward_kinematics(q):
    """Flange position and world joint axes; every hinge turns about its body z axis."""
    position, rotation = np.zeros(3), np.eye(3)
    axes = []
    for (offset, quat), angle in zip(LINK_OFFSETS, q):
        position = position + rotation @ np.array(offset, dtype=float)
        rotation = rotation @ quat_to_matrix(quat)
        axes.append(rotation[:, 2].copy())
        rotation = rotation @ rot_z(angle)
    return position + rotation @ np.array(FLANGE_IN_LINK7), np.array(axes)


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_path(str(ASSETS / "iiwa14.xml"))


def mujoco_flange(model, q):
    data = mujoco.MjData(model)
    data.qpos[:7] = q
    mujoco.mj_forward(model, data)
    return data.site("flange").xpos.copy(), data


def test_flange_at_zero_configuration(model):
    expected, _ = forward_kinematics(np.zeros(7))
    np.testing.assert_allclose(expected, [0, 0, sum(LINK_LENGTHS)], atol=1e-12)
    np.testing.assert_allclose(sum(LINK_LENGTHS), 1.306, atol=1e-12)
    np.testing.assert_allclose(mujoco_flange(model, np.zeros(7))[0], expected, atol=1e-9)


def test_flange_at_home(model):
    expected, _ = forward_kinematics(HOME_QPOS)
    np.testing.assert_allclose(expected, [0.669, 0.0, 0.285], atol=1e-3)
    np.testing.assert_allclose(mujoco_flange(model, HOME_QPOS)[0], expected, atol=1e-9)
    key = model.key("home")
    np.testing.assert_allclose(key.qpos, [0, 0.785398, 0, -1.5708, 0, 0, 0])
    np.testing.assert_allclose(key.ctrl, key.qpos)


def test_flange_and_joint_axes_at_random_configurations(model):
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(-2.0, 2.0, 7)
        expected_flange, expected_axes = forward_kinematics(q)
        flange, data = mujoco_flange(model, q)
        np.testing.assert_allclose(flange, expected_flange, atol=1e-9)
        np.testing.assert_allclose(data.xaxis[:7], expected_axes, atol=1e-9)


def test_world_joint_axes_at_zero_configuration(model):
    _, data = mujoco_flange(model, np.zeros(7))
    z, y = [0, 0, 1], [0, 1, 0]
    np.testing.assert_allclose(data.xaxis[:7], [z, y, z, -np.array(y), z, y, z], atol=1e-9)


def test_joint_ranges_and_limits_match_data_sheet(model):
    ranges = np.deg2rad(RANGE_DEG)
    np.testing.assert_allclose(model.jnt_range[:7], np.stack([-ranges, ranges], 1), atol=1e-5)
    assert model.jnt_limited[:7].all()
    np.testing.assert_allclose(model.actuator_ctrlrange, model.jnt_range[:7])
    assert model.actuator_forcelimited.all()
    np.testing.assert_allclose(model.actuator_forcerange, np.stack([-np.array(TORQUE_NM), TORQUE_NM], 1))
    np.testing.assert_allclose(model.numeric("joint_torque_limits").data, TORQUE_NM)
    np.testing.assert_allclose(model.numeric("joint_velocity_limits").data, np.deg2rad(SPEED_DEG_S), atol=1e-3)
    # Each actuator drives the joint with the same index.
    np.testing.assert_array_equal(model.actuator_trnid[:, 0], np.arange(7))


def test_masses_inertias_and_gravcomp(model):
    bodies = ["base"] + [f"link{i}" for i in range(1, 8)]
    for name, mass, com, inertia in zip(bodies, MASSES, COMS, INERTIAS):
        body = model.body(name)
        np.testing.assert_allclose(body.mass, mass, err_msg=name)
        np.testing.assert_allclose(body.ipos, com, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.sort(body.inertia), np.sort(inertia), rtol=1e-6, err_msg=name)
        if name != "base":
            np.testing.assert_allclose(model.body_gravcomp[body.id], 1.0, err_msg=name)
    np.testing.assert_allclose(model.body("base").subtreemass, 30.61, atol=1e-9)


def test_servos_hold_home_against_gravity(model):
    """With gravcomp the position servos hold `home` (without it they sag ~0.029 rad)."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_step(model, data, nstep=500)  # 1 s
    assert np.abs(data.qpos[:7] - HOME_QPOS).max() < 1e-3


def test_servo_tracks_small_step(model):
    """A 0.1 rad target step on joint 2 settles within 0.5 s (note: ~0.30 s with gravcomp)."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    data.ctrl[1] += 0.1
    mujoco.mj_step(model, data, nstep=250)  # 0.5 s
    assert abs(data.qpos[1] - data.ctrl[1]) < 0.01


def test_push_model_adds_a_free_block(model):
    push = mujoco.MjModel.from_xml_path(str(ASSETS / "iiwa14_push.xml"))
    assert (push.nq, push.nv, push.nu) == (model.nq + 7, model.nv + 6, model.nu)
    assert push.jnt_type[push.joint("block").id] == mujoco.mjtJoint.mjJNT_FREE
    np.testing.assert_allclose(push.body("block").mass, 0.2)
    np.testing.assert_allclose(mujoco_flange(push, HOME_QPOS)[0], forward_kinematics(HOME_QPOS)[0], atol=1e-9)
