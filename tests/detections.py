"""Detections from two engines, two runs or two code bases, compared as sets.

Faces with near-equal scores may come out in either order: another engine,
another ISA (AVX-512 against AVX2), another batch. A test pairs the faces one
to one by box (the pairing with the smallest total box distance), then holds
the pairs to its tolerances; the number of faces is always compared exactly.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment


def as_arrays(faces):
    """deploy/python/infer.py's JSON list of faces -> the dict of arrays."""
    return {"boxes": np.array([f["box"] for f in faces], np.float64).reshape(-1, 4),
            "scores": np.array([f["score"] for f in faces], np.float64),
            "landmarks": (np.array([f["landmarks"] for f in faces], np.float64).reshape(-1, 5, 2)
                          if faces and faces[0].get("landmarks") is not None else None)}


def pair_faces(got, expected):
    """Index into ``got`` for each expected face."""
    if len(expected["boxes"]) == 0:
        return np.zeros(0, np.int64)
    dist = np.abs(np.asarray(expected["boxes"])[:, None, :] - np.asarray(got["boxes"])[None, :, :]).max(axis=2)
    rows, cols = linear_sum_assignment(dist)
    return cols[np.argsort(rows)]


def assert_same_faces(got, expected, box_tol, score_tol, landmark_tol=None, where=""):
    assert len(got["scores"]) == len(expected["scores"]), (
        f"{where}: {len(got['scores'])} faces against {len(expected['scores'])}")
    pair = pair_faces(got, expected)
    np.testing.assert_allclose(np.asarray(got["boxes"])[pair], expected["boxes"], atol=box_tol, rtol=0,
                               err_msg=where)
    np.testing.assert_allclose(np.asarray(got["scores"])[pair], expected["scores"], atol=score_tol, rtol=0,
                               err_msg=where)
    if expected.get("landmarks") is not None:
        np.testing.assert_allclose(np.asarray(got["landmarks"])[pair], expected["landmarks"],
                                   atol=box_tol if landmark_tol is None else landmark_tol, rtol=0, err_msg=where)
