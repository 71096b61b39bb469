"""The FLOPs/params counter against hand-computed figures (mmcv's convention)."""
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from ppfacedet.modeling.flops import count_flops, count_params


class Tiny(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, stride=2, padding=1)                      # with bias
        self.bn = nn.BatchNorm2D(8)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2D(8, 8, 3, padding=1, groups=8, bias_attr=False)
        self.gn = nn.GroupNorm(2, 8)
        self.pool = nn.MaxPool2D(2, 2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))       # 8 x 8 x 10
        x = self.gn(self.dw(x))
        x = F.relu(x) + x                          # functional: not counted
        x = self.up(self.pool(x))                  # pool 8x8x10 -> 8x4x5, up -> 8x8x10
        return self.fc(x.mean(axis=[2, 3]))


def hand_flops():
    out = 8 * 10                                   # output positions of the stride-2 conv on 16x20
    conv = out * 8 * (3 * 3 * 3) + out * 8         # MACs + bias adds
    bn = 2 * out * 8                               # affine: 2 ops per element
    relu = out * 8
    dw = out * 8 * 9
    gn = 2 * out * 8
    pool = out * 8                                 # input elements
    up = out * 8                                   # output elements
    fc = 8 * 5                                     # MACs, bias not counted
    return conv + bn + relu + dw + gn + pool + up + fc


def test_tiny_model_flops_and_params():
    model = Tiny()
    assert count_flops(model, [1, 3, 16, 20]) == hand_flops()
    params = (8 * 27 + 8) + (8 + 8) + 8 * 9 + (8 + 8) + (8 * 5 + 5)   # BN running stats excluded
    assert count_params(model) == params


def test_per_image_and_per_layer():
    model = Tiny()
    total, per_layer = count_flops(model, [3, 3, 16, 20], per_layer=True)
    assert total == hand_flops()
    assert per_layer["fc"] == 40 and per_layer["conv"] == 8 * 10 * 8 * 28
    assert sum(per_layer.values()) == total
    assert model.training  # mode restored


def test_frozen_params_not_counted_and_bad_shape():
    model = Tiny()
    model.fc.weight.stop_gradient = True
    assert count_params(model) == (8 * 27 + 8) + 16 + 72 + 16 + 5
    with pytest.raises(ValueError, match="N,C,H,W"):
        count_flops(model, [3, 16, 20])


@pytest.mark.parametrize("name, params_m, flops_g", [("scrfd_500m", 0.57, 0.508), ("scrfd_2.5g", 0.67, 2.53)])
def test_published_scrfd_sizes(name, params_m, flops_g):
    """SCRFD README (VGA): the counter reproduces the tables mmcv produced."""
    from pathlib import Path

    from ppfacedet.core import load_config
    from ppfacedet.modeling.detector import build_model

    model = build_model(load_config(str(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yml")))
    assert abs(count_params(model) / 1e6 - params_m) <= 0.03 * params_m
    assert abs(count_flops(model, [1, 3, 480, 640]) / 1e9 - flops_g) <= 0.03 * flops_g


def test_flops_tool_prints_the_exact_parameter_count(capsys):
    """YuNet-n has 75,856 parameters (libfacedetection.train's count): the tool
    prints that number, not only 0.0759 M."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("flops_tool", root / "tools" / "flops.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    params, _ = tool.main(["-c", str(root / "configs" / "yunet_n.yml"), "--input_shape", "1,3,64,64"])
    out = capsys.readouterr().out
    assert params == 75856
    assert "params: 0.0759 M (75,856)" in out
