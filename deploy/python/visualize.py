"""Drawing detections (the same picture as ppfacedet/visualize.py, without ppfacedet)."""
import cv2
import numpy as np

# left eye, right eye, nose, left and right mouth corner
LANDMARK_COLOURS = [(255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0)]


def draw_detections(image, det, threshold=0.5):
    """A copy of the BGR image with boxes, scores and landmarks above ``threshold``."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for i in np.nonzero(det["scores"] >= threshold)[0]:
        x1, y1, x2, y2 = (int(round(v)) for v in det["boxes"][i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 220, 0), thickness)
        cv2.putText(canvas, f"{det['scores'][i]:.2f}", (x1, max(0, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 220, 0), thickness)
        if det["landmarks"] is not None:
            for (x, y), colour in zip(det["landmarks"][i], LANDMARK_COLOURS):
                cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, colour, -1)
    return canvas
