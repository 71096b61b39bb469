"""Fine-tuning a released model keeps what it knew.

A BN-folded release (every official ONNX) converts to BatchNorm layers with
identity statistics, which training in BN's training mode replaces with batch
statistics (SCRFD-500M-KPS: AP 0.94 -> 0.00 in 24 steps). ``model.norm_eval:
auto``, the default, keeps exactly those layers in inference mode. The slow
cases run the README's fine-tuning command on real photos, from a folded ONNX
release and from a ``.pth`` with real statistics."""
import logging

import numpy as np
import pytest

from ppfacedet.convert.onnx_weights import unfold_batchnorm
from ppfacedet.core import load_config
from ppfacedet.core.errors import ConfigError
from ppfacedet.engine.trainer import Trainer
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.frozen_norms import batchnorms
from tiny import make_tiny_config


def unfold_into(norm):
    """Give ``norm`` the statistics (and affine) a folded export's conversion writes."""
    channels = norm._mean.shape[0]
    _, bn = unfold_batchnorm(np.ones([channels, 1, 1, 1], np.float32), np.arange(channels, dtype=np.float32))
    for name, value in bn.items():
        getattr(norm, name).set_value(value)


def modes(model):
    return {name: layer.training for name, layer in batchnorms(model)}


@pytest.fixture
def tiny_cfg(tmp_path):
    return make_tiny_config(tmp_path)


def test_auto_keeps_only_unfolded_norms_in_inference_mode(tiny_cfg):
    model = build_model(load_config(tiny_cfg))
    norms = batchnorms(model)
    assert len(norms) > 4
    model.train()
    assert all(modes(model).values()), "a new model (training from scratch) must train every BatchNorm"
    unfolded = {name for name, layer in norms[::3]}
    for name, layer in norms[::3]:
        unfold_into(layer)
    model.train()
    assert sorted(model.frozen_norms()) == sorted(unfolded)
    assert {name for name, training in modes(model).items() if not training} == unfolded
    model.eval()
    model.train()  # after an evaluation, as the Evaluator callback does
    assert {name for name, training in modes(model).items() if not training} == unfolded


@pytest.mark.parametrize("setting, frozen", [(True, "all"), (False, "none")])
def test_norm_eval_true_and_false_override_auto(tiny_cfg, setting, frozen):
    model = build_model(load_config(tiny_cfg, [f"model.norm_eval={str(setting).lower()}"]))
    unfold_into(batchnorms(model)[0][1])
    model.train()
    expected = not setting
    assert all(training == expected for training in modes(model).values()), frozen


def test_a_wrong_norm_eval_is_a_config_error_naming_the_key(tiny_cfg):
    with pytest.raises(ConfigError, match="norm_eval"):
        build_model(load_config(tiny_cfg, ["model.norm_eval=sometimes"]))


def test_training_keeps_unfolded_statistics_trains_the_rest_and_says_so(tiny_cfg, caplog):
    trainer = Trainer(load_config(tiny_cfg, ["epochs=1"]))
    norms = batchnorms(trainer.model)
    unfold_into(norms[0][1])
    frozen, trained = norms[0][1], norms[1][1]
    scale_before, mean_before = frozen.weight.numpy().copy(), trained._mean.numpy().copy()
    with caplog.at_level(logging.INFO, logger="ppfacedet"):
        trainer.train()
    assert any(f"1 of {len(norms)} BatchNorm layers hold the identity statistics" in r.message
               for r in caplog.records)
    assert holds_identity(frozen), "the unfolded statistics changed during training"
    assert not np.array_equal(frozen.weight.numpy(), scale_before), "the frozen layer's scale did not train"
    assert not np.array_equal(trained._mean.numpy(), mean_before), "a BatchNorm with real statistics was frozen"


def holds_identity(norm):
    return not norm._mean.numpy().any() and np.abs(norm._variance.numpy() - (1 - norm._epsilon)).max() < 1e-7


def test_norm_eval_false_warns_about_unfolded_statistics(tiny_cfg, caplog):
    trainer = Trainer(load_config(tiny_cfg, ["epochs=1", "model.norm_eval=false"]))
    unfold_into(batchnorms(trainer.model)[0][1])
    with caplog.at_level(logging.WARNING, logger="ppfacedet"):
        trainer.train()
    assert any("model.norm_eval=false" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert not holds_identity(batchnorms(trainer.model)[0][1])
