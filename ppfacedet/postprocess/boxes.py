"""Box and keypoint coding shared by heads, assigners and decoders (paddle)."""
import paddle


def box_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]).clip(min=0) * (boxes[..., 3] - boxes[..., 1]).clip(min=0)


def pairwise_iou(a, b, eps=1e-9):
    """IoU between every box of a [n,4] and b [m,4] (xyxy, continuous coords) -> [n,m]."""
    lt = paddle.maximum(a[:, None, :2], b[None, :, :2])
    rb = paddle.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / (union + eps)


def distance_to_box(points, distances):
    """points [...,2] (x,y), distances [...,4] (left, top, right, bottom) -> xyxy."""
    x, y = points[..., 0], points[..., 1]
    return paddle.stack([x - distances[..., 0], y - distances[..., 1],
                         x + distances[..., 2], y + distances[..., 3]], axis=-1)


def box_to_distance(points, boxes):
    """Inverse of distance_to_box."""
    x, y = points[..., 0], points[..., 1]
    return paddle.stack([x - boxes[..., 0], y - boxes[..., 1],
                         boxes[..., 2] - x, boxes[..., 3] - y], axis=-1)


def offsets_to_keypoints(points, offsets):
    """points [...,2], offsets [...,2K] (dx, dy interleaved) -> keypoints [...,2K]."""
    k = offsets.shape[-1] // 2
    return offsets + paddle.tile(points, [1] * (points.ndim - 1) + [k])


def keypoints_to_offsets(points, keypoints):
    k = keypoints.shape[-1] // 2
    return keypoints - paddle.tile(points, [1] * (points.ndim - 1) + [k])
