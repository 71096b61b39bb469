import collections
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


def pytest_collection_modifyitems(config, items):
    """Files holding the most ``slow`` tests run first, each file's tests in
    their own order. pytest.ini hands whole files to two workers; started
    first, the files of minutes are spread over both, and the files of
    seconds fill in at the end so both workers finish together (in
    alphabetical order, a file of minutes could start as the other worker ran
    out of work)."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
