"""Ground truth for the WIDER FACE protocol: the official ``.mat`` files or lists.

A :class:`GroundTruth` holds, per image, a key ``"<event>/<image name>"`` (no
extension), the face boxes as float64 ``[k, 4]`` arrays in ``x, y, w, h`` and,
per setting (``easy``/``medium``/``hard`` for WIDER), which of those boxes are
*kept*.  Boxes that are not kept in a setting are "ignored": a prediction whose
best match is an ignored face is neither a true nor a false positive.

The official files are read exactly as the official tool reads them:
``wider_face_val.mat`` gives ``event_list``, ``file_list`` and
``face_bbx_list``; ``wider_{easy,medium,hard}_val.mat`` give ``gt_list``, the
1-based indices of the kept boxes of every image.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from .errors import EvaluationError

WIDER_SETTINGS = ("easy", "medium", "hard")
MAT_FILES = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}
_MAT_CACHE = {}  # (folder, file stamps) -> what _read_mat_dir returned
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def strip_image_extension(name):
    """``"a/b.jpg"`` -> ``"a/b"``; only a real image extension is removed.

    (``str.rstrip('.jpg')`` would also eat trailing ``j``/``p``/``g`` letters
    of the stem, a classic bug of the Python ports.)
    """
    name = name.strip().replace("\\", "/")
    root, ext = os.path.splitext(name)
    if ext.lower() in IMAGE_EXTENSIONS:
        return root
    return name


class GroundTruth:
    """Boxes and per-setting keep masks of an evaluation set.

    Attributes:
        names: list of image keys (``"event/image"``, no extension).
        boxes: list of float64 ``[k, 4]`` arrays, ``x, y, w, h``.
        settings: tuple of setting names, in report order.
        keep: ``{setting: list of bool [k] arrays}``.
    """

    def __init__(self, names, boxes, keep_masks, settings):
        self.names = list(names)
        self.boxes = list(boxes)
        self.settings = tuple(settings)
        self.keep = {s: list(keep_masks[s]) for s in self.settings}
        self.index = {}
        for i, name in enumerate(self.names):
            if name in self.index:
                raise EvaluationError("duplicate image %r in the ground truth" % name)
            self.index[name] = i
        by_base = {}
        for i, name in enumerate(self.names):
            base = name.rsplit("/", 1)[-1]
            by_base[base] = None if base in by_base else i
        self._by_basename = by_base
        counts = np.array([len(b) for b in self.boxes], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self.keep_flat = {
            s: (np.concatenate(self.keep[s]) if self.boxes else np.zeros(0, bool)).astype(bool)
            for s in self.settings
        }

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        faces = {s: int(self.keep_flat[s].sum()) for s in self.settings}
        return "GroundTruth(%d images, %d faces, kept=%s)" % (
            len(self.names), int(self.offsets[-1]), faces)

    def num_faces(self, setting):
        """Number of kept faces of a setting (the recall denominator)."""
        return int(self.keep_flat[setting].sum())

    def lookup(self, key):
        """Image index of a prediction key, or None.

        Accepts ``"event/name"``, ``"event/name.jpg"`` and, when the image name
        is unique in the set, a bare ``"name"``/``"name.jpg"``.
        """
        key = strip_image_extension(str(key))
        i = self.index.get(key)
        if i is None:
            i = self._by_basename.get(key.rsplit("/", 1)[-1])
        return i

    # ------------------------------------------------------------ builders
    @classmethod
    def from_lists(cls, names, boxes, keep):
        """Build in memory.

        Args:
            names: ``["event/img_name", ...]`` (an image extension is dropped).
            boxes: per image, a float array ``[k, 4]`` (``x, y, w, h``).
            keep: ``{setting: [0-based index array per image]}``; settings keep
                the dict order.  ``None`` means every box is kept, as setting
                ``"all"``.
        """
        names = [strip_image_extension(str(n)) for n in names]
        if len(boxes) != len(names):
            raise EvaluationError("from_lists: %d names but %d box arrays" % (len(names), len(boxes)))
        arrs = []
        for n, b in zip(names, boxes):
            a = np.asarray(b, dtype=np.float64)
            if a.size == 0:
                a = np.zeros((0, 4))
            if a.ndim != 2 or a.shape[1] != 4:
                raise EvaluationError("ground truth of %r must be [k, 4] (x, y, w, h), got shape %s"
                                      % (n, a.shape))
            if not np.isfinite(a).all():
                raise EvaluationError("ground truth of %r has a non-finite coordinate" % n)
            arrs.append(a)
        if keep is None:
            keep = {"all": [np.arange(len(a)) for a in arrs]}
        masks = {}
        for s, per_image in keep.items():
            if len(per_image) != len(names):
                raise EvaluationError("keep[%r] has %d entries for %d images" % (s, len(per_image), len(names)))
            ms = []
            for n, a, idx in zip(names, arrs, per_image):
                idx = np.asarray(idx, dtype=np.int64).ravel()
                if idx.size and (idx.min() < 0 or idx.max() >= len(a)):
                    raise EvaluationError("keep[%r] of %r has an index outside 0..%d" % (s, n, len(a) - 1))
                m = np.zeros(len(a), dtype=bool)
                m[idx] = True
                ms.append(m)
            masks[s] = ms
        return cls(names, arrs, masks, list(keep))

    @classmethod
    def from_mat_dir(cls, gt_dir):
        """Read the four official files of ``gt_dir`` (scipy.io.loadmat, in a
        child process: scipy's .mat reader can crash the interpreter on a
        damaged file, seen with scipy 1.17, or ask for gigabytes)."""
        gt_dir = Path(gt_dir)
        if not gt_dir.is_dir():
            raise EvaluationError("ground-truth folder not found: %s" % gt_dir)
        files = [gt_dir / name for name in MAT_FILES.values()]
        for path in files:
            if not path.is_file():
                raise EvaluationError("missing ground-truth file %s (expected %s)"
                                      % (path, ", ".join(MAT_FILES.values())))
        # the child costs a second or two, so evaluating every epoch reads unchanged files once
        stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        key = (str(gt_dir.resolve()), stamp)
        if key not in _MAT_CACHE:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: forking paddle's threads is unsafe
            with ProcessPoolExecutor(1, mp_context=context, initializer=_limit_memory) as pool:
                try:
                    _MAT_CACHE[key] = pool.submit(_read_mat_dir, str(gt_dir)).result()
                except BrokenProcessPool:
                    raise EvaluationError("reading the .mat files of %s crashed the reader: one of them is "
                                          "damaged" % gt_dir) from None
        names, boxes, keep = _MAT_CACHE[key]
        try:
            return cls.from_lists(names, boxes, keep)
        except EvaluationError as e:
            raise EvaluationError("%s: %s" % (gt_dir, e)) from None

    def subset(self, indices):
        """A GroundTruth of the given image indices (same settings)."""
        indices = list(indices)
        return GroundTruth([self.names[i] for i in indices], [self.boxes[i] for i in indices],
                           {s: [self.keep[s][i] for i in indices] for s in self.settings},
                           self.settings)


CHILD_MEMORY = 1 << 30  # the official files need about 100 MB; a damaged 568-byte file asked scipy for 2 GB


def _limit_memory():
    """Child-process initializer: a damaged file's absurd sizes fail fast with MemoryError."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = CHILD_MEMORY if hard == resource.RLIM_INFINITY else min(CHILD_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _read_mat_dir(gt_dir):
    """(names, boxes, keep) from the four official files (runs in a child process)."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    mats = {}
    for key, fname in MAT_FILES.items():
        path = gt_dir / fname
        try:
            mats[key] = loadmat(str(path))
        except Exception as e:  # scipy raises several types for bad files
            raise EvaluationError("cannot read %s: %s" % (path, " ".join(str(e).split())))
    full = mats["all"]
    for field in ("event_list", "file_list", "face_bbx_list"):
        if field not in full:
            raise EvaluationError("%s has no %r" % (gt_dir / MAT_FILES["all"], field))
    for s in WIDER_SETTINGS:
        if "gt_list" not in mats[s]:
            raise EvaluationError("%s has no 'gt_list'" % (gt_dir / MAT_FILES[s]))
    names, boxes = [], []
    keep = {s: [] for s in WIDER_SETTINGS}
    try:
        for i in range(len(full["event_list"])):
            event = str(full["event_list"][i][0][0])
            files = full["file_list"][i][0]
            bbx = full["face_bbx_list"][i][0]
            for j in range(len(files)):
                names.append(event + "/" + str(files[j][0][0]))
                boxes.append(np.asarray(bbx[j][0], dtype=np.float64).reshape(-1, 4))
                for s in WIDER_SETTINGS:
                    idx = np.asarray(mats[s]["gt_list"][i][0][j][0]).astype(np.int64).ravel()
                    keep[s].append(idx - 1)  # 1-based in the .mat files
    except (IndexError, TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise EvaluationError("%s: the .mat files do not have the WIDER FACE layout (%s: %s)"
                              % (gt_dir, type(e).__name__, " ".join(str(e).split()))) from None
    return names, boxes, keep
