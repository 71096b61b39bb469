"""Package dependencies point one way: modeling never needs export."""
import os
import subprocess
import sys

from tiny import ROOT

PROBE = """
import sys
from ppfacedet.core import load_config
from ppfacedet.modeling.detector import build_model
cfg = load_config('configs/yunet_n.yml', overlays=['configs/slim/qat.yml'])
model = build_model(cfg)
assert any('Quant' in type(m).__name__ for m in model.sublayers()), 'QAT did not wrap the model'
print(sorted(m for m in sys.modules if m.startswith('ppfacedet.export')))
"""


def test_building_a_qat_model_does_not_import_export():
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
