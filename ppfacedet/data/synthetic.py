"""Deterministic synthetic faces with five-landmark annotations.

No dataset can be downloaded here, so the demo trains on drawn faces: a skin
ellipse with eyes, nose and mouth on cluttered backgrounds, plus featureless
ellipses as distractors so that a detector must learn the facial layout, not
just "a blob". Written in labelv2 format (``# path w h`` then ``x1 y1 x2 y2``
and five ``x y 1.0`` landmarks: left eye, right eye, nose, mouth corners).
"""
import hashlib
import json
import os

import cv2
import numpy as np
from tqdm import tqdm

SKIN_TONES = [(172, 204, 236), (140, 180, 225), (110, 150, 205), (80, 120, 175), (60, 90, 140),
              (150, 190, 240), (95, 135, 190)]
DEFAULTS = {"root": "data/synthetic", "num_train": 400, "num_val": 80, "image_size": 320,
            "faces_per_image": [1, 6], "face_size": [12, 110], "seed": 0}


def _background(rng, size):
    """A colour gradient with random shapes and noise."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = (c0 * (1 - t) + c1 * t).repeat(size, axis=1).astype(np.float32)
    if rng.random() < 0.5:
        img = img.transpose(1, 0, 2).copy()
    img = np.ascontiguousarray(img.astype(np.uint8))
    for _ in range(int(rng.integers(3, 12))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(5, size // 4))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(5, size // 4))), colour, -1)
        else:
            cv2.line(img, (x, y), tuple(int(v) for v in rng.integers(0, size, 2)), colour,
                     int(rng.integers(1, 6)))
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _rotate(points, angle):
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    return points @ rot.T


def _draw_face(img, cx, cy, w, angle, rng):
    """Draw one face; return its box (x1,y1,x2,y2) and landmarks [5,2]."""
    h = w * 1.25
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    skin = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in skin)
    axes = (max(1, int(w / 2)), max(1, int(h / 2)))
    if rng.random() < 0.7:  # hair behind the top of the head
        hair = tuple(int(c) for c in rng.integers(0, 90, 3))
        hc = np.array([cx, cy]) + _rotate(np.array([[0, -0.12 * h]], np.float32), angle)[0]
        cv2.ellipse(img, (int(hc[0]), int(hc[1])), (int(axes[0] * 1.08), int(axes[1] * 0.95)), angle,
                    180, 360, hair, -1)
    cv2.ellipse(img, (int(cx), int(cy)), axes, angle, 0, 360, skin, -1)
    local = np.array([[-0.2 * w, -0.1 * h], [0.2 * w, -0.1 * h], [0, 0.1 * h],
                      [-0.17 * w, 0.26 * h], [0.17 * w, 0.26 * h]], np.float32)
    local += rng.normal(0, 0.015 * w, local.shape).astype(np.float32)
    lms = _rotate(local, angle) + np.array([cx, cy], np.float32)
    eye_r = max(1, int(0.07 * w))
    for x, y in lms[:2]:
        cv2.circle(img, (int(x), int(y)), eye_r + max(1, eye_r // 2), (245, 245, 245), -1)
        cv2.circle(img, (int(x), int(y)), eye_r, tuple(int(c) for c in rng.integers(0, 80, 3)), -1)
    nose_tip = lms[2]
    nose_top = (lms[0] + lms[1]) / 2 + (nose_tip - (lms[0] + lms[1]) / 2) * 0.3
    darker = tuple(int(c * 0.7) for c in skin)
    cv2.line(img, tuple(int(v) for v in nose_top), tuple(int(v) for v in nose_tip), darker,
             max(1, int(0.04 * w)))
    lip = (int(rng.integers(30, 90)), int(rng.integers(20, 70)), int(rng.integers(120, 200)))
    mouth_mid = (lms[3] + lms[4]) / 2 + _rotate(np.array([[0, 0.05 * h]], np.float32), angle)[0]
    pts = np.stack([lms[3], mouth_mid, lms[4]]).astype(np.int32)
    cv2.polylines(img, [pts], False, lip, max(1, int(0.05 * w)))
    # The box is the axis-aligned extent of the rotated ellipse, not of its corners.
    a, b, t = w / 2, h / 2, np.deg2rad(angle)
    ex = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
    ey = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
    return np.array([cx - ex, cy - ey, cx + ex, cy + ey], np.float32), lms


def _draw_distractor(img, rng, size):
    colour = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    w = int(rng.integers(10, 80))
    centre = tuple(int(v) for v in rng.integers(0, size, 2))
    cv2.ellipse(img, centre, (w // 2, int(w * 0.62)), float(rng.uniform(-30, 30)), 0, 360, colour, -1)


def _overlaps(box, boxes):
    for other in boxes:
        ix = min(box[2], other[2]) - max(box[0], other[0])
        iy = min(box[3], other[3]) - max(box[1], other[1])
        if ix > -2 and iy > -2:
            return True
    return False


def render_image(rng, size, faces_per_image, face_size):
    """One image with its boxes [k,4] and landmarks [k,5,2]."""
    img = _background(rng, size)
    for _ in range(int(rng.integers(0, 3))):
        _draw_distractor(img, rng, size)
    boxes, lms = [], []
    wanted = int(rng.integers(faces_per_image[0], faces_per_image[1] + 1))
    for _ in range(wanted * 10):
        if len(boxes) == wanted:
            break
        # log-uniform sizes: as many small faces as large ones, like WIDER
        w = float(np.exp(rng.uniform(np.log(face_size[0]), np.log(face_size[1]))))
        cx, cy = rng.uniform(w * 0.6, size - w * 0.6, 2)
        angle = float(rng.uniform(-25, 25))
        box = np.array([cx - w * 0.7, cy - w * 0.8, cx + w * 0.7, cy + w * 0.8])
        if _overlaps(box, boxes):
            continue
        b, lm = _draw_face(img, cx, cy, w, angle, rng)
        boxes.append(b)
        lms.append(lm)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size)
    return img, boxes, np.asarray(lms, np.float32).reshape(-1, 5, 2)


def write_split(out_dir, count, settings, seed, desc):
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    lines = []
    for i in tqdm(range(count), desc=desc, leave=False, disable=None):
        rng = np.random.default_rng([seed, i])
        img, boxes, lms = render_image(rng, settings["image_size"], settings["faces_per_image"],
                                       settings["face_size"])
        rel = f"synth_{i:05d}.jpg"
        cv2.imwrite(os.path.join(out_dir, "images", rel), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines.append(f"# {rel} {img.shape[1]} {img.shape[0]}")
        for box, lm in zip(boxes, lms):
            kps = " ".join(f"{x:.2f} {y:.2f} 1.0" for x, y in lm)
            lines.append(" ".join(f"{v:.2f}" for v in box) + " " + kps)
    tmp = os.path.join(out_dir, "labelv2.txt.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(out_dir, "labelv2.txt"))


def ensure_synthetic(settings):
    """Generate the train/val splits under ``root`` unless an identical set
    (same settings) is already there. Returns the root."""
    settings = {**DEFAULTS, **(settings or {})}
    root = settings["root"]
    stamp = os.path.join(root, "settings.json")
    key = {k: settings[k] for k in DEFAULTS if k != "root"}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f).get("digest") == digest:
                return root
    write_split(os.path.join(root, "train"), settings["num_train"], settings, settings["seed"], "synthetic train")
    write_split(os.path.join(root, "val"), settings["num_val"], settings, settings["seed"] + 1, "synthetic val")
    with open(stamp, "w") as f:
        json.dump({"digest": digest, **key}, f)
    return root
