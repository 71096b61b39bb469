"""ppfacedet: PaddlePaddle face detection (boxes and five landmarks)."""
