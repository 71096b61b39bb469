"""BatchNorm running statistics follow torch's convention in training: the
running variance moves toward the UNBIASED batch variance (issue 23)."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from paddle.static import InputSpec

from ppfacedet.core import load_config
from ppfacedet.engine.batchnorm_stats import follow_torch_running_variance
from ppfacedet.engine.trainer import Trainer
from tiny import make_tiny_config

TORCH_MOMENTUM = 0.1  # torch's weight of the batch statistic; Paddle's momentum 0.9 is the same update
# Relative, float32: measured worst 3.2e-7 (Paddle's op) and 1.0e-6 (sync_bn's layer, float32 sums over the
# batch) against torch's formula in float64; Paddle's own biased update is 2.5e-3 to 0.13 away on the same tests
RTOL = 3e-6


def record_batchnorm_inputs(model):
    """Every BatchNorm's running variance before each call, with its input."""
    calls, handles = {}, []
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.layer.norm._BatchNormBase):
            def hook(layer, inputs, name=name):
                calls.setdefault(name, []).append((layer._variance.numpy().copy(), inputs[0].numpy().copy()))
            handles.append(layer.register_forward_pre_hook(hook))
    return calls, handles


def torch_running_variance(var, inputs):
    """torch's BatchNorm2d running variance, from ``var``, after calls on these inputs (float64)."""
    var = np.float64(var)
    for x in inputs:
        var = (1 - TORCH_MOMENTUM) * var + TORCH_MOMENTUM * x.astype(np.float64).var(axis=(0, 2, 3), ddof=1)
    return var


def worst_variance_error(model, calls):
    """max |running variance / torch's - 1| over every BatchNorm that ran."""
    layers = dict(model.named_sublayers())
    return max(float(np.abs(layers[name]._variance.numpy()
                            / torch_running_variance(layer_calls[0][0], [x for _, x in layer_calls]) - 1).max())
               for name, layer_calls in calls.items())


class ConvBN(nn.Layer):
    """Two conv/BN stages, the second at stride 2 (a 4x4 input gives it a 2x2 map)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2D(3, 4, 3, padding=1), nn.BatchNorm2D(4), nn.ReLU(),
                                  nn.Conv2D(4, 6, 3, stride=2, padding=1), nn.BatchNorm2D(6), nn.ReLU(),
                                  nn.Conv2D(6, 2, 1))

    def forward(self, x):
        return self.body(x)


def randomise_statistics(model, seed):
    """Trained-looking running statistics, so the old values weigh in the update too."""
    rng = np.random.default_rng(seed)
    for layer in model.sublayers():
        if isinstance(layer, nn.layer.norm._BatchNormBase):
            layer._mean.set_value(rng.normal(0, 1, layer._mean.shape).astype("float32"))
            layer._variance.set_value(rng.uniform(0.2, 3, layer._variance.shape).astype("float32"))


@pytest.mark.parametrize("shape", [(1, 3, 4, 4), (3, 3, 9, 7)], ids=["batch1-2x2", "batch3-odd"])
def test_small_network_step_updates_the_running_variance_as_torch(shape):
    paddle.seed(0)
    model = ConvBN()
    randomise_statistics(model, 1)
    follow_torch_running_variance(model)
    model.train()
    calls, _ = record_batchnorm_inputs(model)
    optimizer = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    x = paddle.to_tensor(np.random.default_rng(2).normal(1, 2, shape).astype("float32"))
    (model(x) ** 2).mean().backward()
    optimizer.step()
    assert {tuple(c[0][1].shape[2:]) for c in calls.values()} >= ({(2, 2)} if shape[2] == 4 else set())
    worst = worst_variance_error(model, calls)
    print(f"{shape}: max |running variance / torch's - 1| = {worst:.2e}")
    assert worst < RTOL


def test_normalisation_running_mean_state_dict_inference_and_export_are_unchanged(tmp_path):
    paddle.seed(0)
    plain, converted = ConvBN(), ConvBN()
    converted.set_state_dict(plain.state_dict())
    follow_torch_running_variance(converted)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in converted.state_dict().items()}
    x = paddle.to_tensor(np.random.default_rng(3).normal(0, 1, (2, 3, 8, 8)).astype("float32"))
    for train in (False, True):  # inference first: training moves the two models' variances apart
        plain.train(train)
        converted.train(train)
        np.testing.assert_array_equal(plain(x).numpy(), converted(x).numpy())
    for name, layer in plain.named_sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            np.testing.assert_array_equal(layer._mean.numpy(), converted.state_dict()[f"{name}._mean"].numpy())
    # export converts the forward's code (dy2static): a trained model must still export
    converted.eval()
    paddle.jit.save(converted, str(tmp_path / "model"), input_spec=[InputSpec([None, 3, None, None], "float32")])
    np.testing.assert_array_equal(paddle.jit.load(str(tmp_path / "model"))(x).numpy(), converted(x).numpy())


def test_one_value_per_channel_is_refused_as_torch_does():
    model = ConvBN()
    follow_torch_running_variance(model)
    model.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(paddle.ones([1, 3, 2, 2]))  # the stride-2 stage sees a 1x1 map
    model.eval()
    model(paddle.ones([1, 3, 2, 2]))  # inference only reads the statistics


def test_batchnorm_in_eval_mode_does_not_update():
    """``norm_eval``: BatchNorm kept in inference mode while the model trains."""
    model = ConvBN()
    randomise_statistics(model, 4)
    follow_torch_running_variance(model)
    model.train()
    frozen = model.body[1]
    frozen.eval()
    before = frozen._mean.numpy().copy(), frozen._variance.numpy().copy()
    model(paddle.ones([2, 3, 4, 4]))
    np.testing.assert_array_equal(frozen._mean.numpy(), before[0])
    np.testing.assert_array_equal(frozen._variance.numpy(), before[1])


@pytest.mark.parametrize("sync_bn", [False, True], ids=["batchnorm", "sync_bn"])
def test_retinaface_training_step_updates_every_running_variance_as_torch(tmp_path, sync_bn):
    """One step of the trainer on RetinaFace-mnet0.25, one 64x64 image: the
    stride-32 stages see 2x2 maps. With sync_bn the single process runs the
    CPU SyncBN layer (engine/sync_batchnorm.py)."""
    cfg_path = make_tiny_config(tmp_path, num_train=1, num_val=1, image_size=64)
    trainer = Trainer(load_config(cfg_path, ["epochs=1", "train_loader.batch_size=1", f"sync_bn={sync_bn}"]))
    randomise_statistics(trainer.model, 5)
    calls, _ = record_batchnorm_inputs(trainer.model)
    state = trainer.train()
    assert state["iteration"] == 1
    assert len(calls) == sum(isinstance(m, nn.layer.norm._BatchNormBase) for m in trainer.model.sublayers())
    assert (2, 2) in {tuple(c[0][1].shape[2:]) for c in calls.values()}
    worst = worst_variance_error(trainer.model, calls)
    print(f"RetinaFace-mnet0.25, sync_bn={sync_bn}: max |running variance / torch's - 1| = {worst:.2e} "
          f"over {len(calls)} BatchNorms")
    assert worst < RTOL
