"""Reading images into 3-channel BGR uint8, whatever they were stored as."""
import os

import cv2
import numpy as np

from ..core.errors import DataError


def read_image(path):
    """BGR uint8 [H,W,3]. Grayscale is replicated, alpha dropped, 16-bit scaled.
    Missing or undecodable files raise DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
