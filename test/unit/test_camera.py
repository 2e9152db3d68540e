"""The one camera model: every image operation keeps pixel centres aligned."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_perception.core.camera import PinholeCamera, scale_projection

CAM = PinholeCamera(fx=500.0, fy=480.0, cx=319.5, cy=239.5, width=640, height=480)


def test_resize_keeps_pixel_centres_aligned():
    half = CAM.resized(320, 240)
    assert (half.fx, half.fy) == (250.0, 240.0)
    assert (half.cx, half.cy) == (159.5, 119.5)  # the image centre stays the centre
    assert CAM.resized(640, 480) == CAM
    # a world point projects to corresponding pixels in both images
    p = np.array([[0.3], [-0.2], [2.0]])
    u, v = CAM.project(p)
    u2, v2 = half.project(p)
    assert (u2[0] + 0.5) * 2 - 0.5 == pytest.approx(u[0])
    assert (v2[0] + 0.5) * 2 - 0.5 == pytest.approx(v[0])


def test_crop_mirror_and_zoom():
    crop = CAM.cropped(100, 50, 200, 100)
    assert (crop.cx, crop.cy, crop.width, crop.height) == (219.5, 189.5, 200, 100)
    mirrored = crop.mirrored()
    assert mirrored.cx == pytest.approx(199 - 219.5)
    assert mirrored.mirrored() == crop
    assert CAM.zoomed_out(2.0).fx == 250.0


def test_back_project_then_project_is_identity():
    u, v = np.array([0.0, 100.0, 639.0]), np.array([0.0, 300.0, 479.0])
    pts = CAM.back_project(u, v, np.array([1.0, 2.5, 7.0]))
    uu, vv = CAM.project(pts)
    np.testing.assert_allclose(uu, u, atol=1e-9)
    np.testing.assert_allclose(vv, v, atol=1e-9)


def test_from_matrix_and_camera_info_refuse_uncalibrated():
    with pytest.raises(ValueError, match="focal length"):
        PinholeCamera.from_matrix(np.zeros((3, 3)))

    class Info:  # duck-typed like rclpy and rosbags messages
        k = [0.0] * 9
        width, height = 640, 480

    assert PinholeCamera.from_camera_info_or_none(Info()) is None
    Info.k = list(CAM.matrix().reshape(-1))
    assert PinholeCamera.from_camera_info(Info()) == CAM


def test_projection_matrix_scales_like_the_camera():
    P = [500.0, 0.0, 319.5, -25.0, 0.0, 480.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    half = scale_projection(P, 0.5, 0.5)
    r = CAM.resized(320, 240)
    assert (half[0], half[2], half[5], half[6]) == (r.fx, r.cx, r.fy, r.cy)
    assert half[3] == -12.5  # the stereo baseline term scales with the focal length
