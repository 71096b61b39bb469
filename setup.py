"""ppfacedet: PaddlePaddle face detection (RetinaFace, SCRFD, DamoFD, YuNet).

PaddlePaddle itself is not a dependency here on purpose: install
``paddlepaddle`` (CPU, as requirements.txt does) or ``paddlepaddle-gpu`` for
your CUDA; ppfacedet runs unchanged on either.
"""
from setuptools import find_packages, setup

setup(
    name="ppfacedet",
    version="0.1.0",
    description="PaddlePaddle face detection: boxes and five landmarks, weight-compatible with the official releases",
    packages=find_packages(include=["ppfacedet", "ppfacedet.*", "widerface_evaluate"]),
    python_requires=">=3.9",
    install_requires=["numpy", "opencv-python-headless", "pyyaml", "scipy", "tqdm", "matplotlib", "onnx",
                      "onnxruntime", "visualdl"],
)
