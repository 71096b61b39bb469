"""The ISA-sensitive tests (marked ``isa_sensitive``) once more, with OpenCV,
numpy and oneDNN held to AVX2 code.

The project's machines are AVX-512 + VNNI or AVX2 only, and these libraries
pick their SIMD code at run time, so 8-bit image ops may round differently and
near-tied faces may swap order. The suite runs those tests natively, and this
test runs them again in a child pytest whose libraries may use nothing beyond
AVX2: an AVX-512 machine thereby checks what an AVX2 machine computes. (On an
AVX2 machine the hold changes nothing and the run repeats the native one.)
"""
import os
import subprocess
import sys

import pytest

from tiny import ROOT

# Each library's own switch, with feature names as each spells them. They are
# read when the library starts, hence a child process.
HELD_TO_AVX2 = {
    "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL,AVX_VNNI",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "PPFACEDET_HELD_TO_AVX2": "1",
}


@pytest.mark.slow
def test_isa_sensitive_tests_pass_with_avx2_dispatch():
    env = {**os.environ, **HELD_TO_AVX2}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-m",
                        "isa_sensitive and not extended", "tests"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1200)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0, f"held to AVX2: {summary}\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary


@pytest.mark.isa_sensitive
def test_the_hold_reaches_every_library():
    """In the held run: no library may use AVX-512 (the run would prove nothing)."""
    if not os.environ.get("PPFACEDET_HELD_TO_AVX2"):
        pytest.skip("checks the child run of test_isa_sensitive_tests_pass_with_avx2_dispatch")
    import cv2
    from numpy._core._multiarray_umath import __cpu_features__
    assert not any(f.lstrip("*").startswith("AVX512") and not f.endswith("?")
                   for f in cv2.getCPUFeaturesLine().split()), cv2.getCPUFeaturesLine()
    assert not __cpu_features__["AVX512F"]
    probe = ("import paddle, numpy as np; from paddle.inference import Config, create_predictor\n"
             "paddle.enable_static(); x = paddle.static.data('x', [1, 3, 8, 8]);"
             "y = paddle.static.nn.conv2d(x, 4, 3); exe = paddle.static.Executor();"
             "exe.run(paddle.static.default_startup_program())\n"
             "import sys; paddle.static.save_inference_model(sys.argv[1], [x], [y], exe)\n"
             "c = Config(sys.argv[1] + '.pdmodel', sys.argv[1] + '.pdiparams'); c.enable_mkldnn();"
             "p = create_predictor(c); h = p.get_input_handle(p.get_input_names()[0]);"
             "h.copy_from_cpu(np.ones((1, 3, 8, 8), 'float32')); p.run()\n")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-c", probe, os.path.join(tmp, "m")], capture_output=True, text=True,
                           env={**os.environ, "ONEDNN_VERBOSE": "1", "FLAGS_enable_pir_api": "0"}, timeout=300)
    isa = [line for line in r.stdout.splitlines() if ",info,cpu,isa:" in line or "cpu,isa:" in line]
    assert isa, f"oneDNN printed no ISA line: {r.stdout[-1500:]} {r.stderr[-1500:]}"
    assert "512" not in isa[0] and "AVX2" in isa[0].upper().replace(" ", ""), isa[0]
