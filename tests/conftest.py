import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*ccache.*")
os.environ.setdefault("FLAGS_call_stack_level", "0")
# Tests never download: a config whose pretrain_weights is a URL fails fast
# (tools run as subprocesses inherit this); download tests lift it themselves.
os.environ["PPFACEDET_OFFLINE"] = "1"


@pytest.fixture
def shared_data():
    """../shared/data, or a skip: the official weights and WIDER data are
    research-only and never part of the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present: official weights and WIDER data are not redistributable")
    return SHARED_DATA
