"""Real architectures from keras.applications (weights=None, 32x32 inputs, logits out) and a transformer encoder
block: prune(0.3) equals the masked original or names what blocks it; two groups checked against references
zeroed by hand from the architecture's known structure."""

import keras
import numpy as np
import pytest

from masklab import surgery

L = keras.layers
APPLICATIONS = {
    "ResNet50": keras.applications.ResNet50,
    "MobileNetV2": keras.applications.MobileNetV2,
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    "EfficientNetB0": keras.applications.EfficientNetB0,
    "DenseNet121": keras.applications.DenseNet121,
    "VGG16": keras.applications.VGG16,
    "ConvNeXtTiny": keras.applications.ConvNeXtTiny,
}


# Compiling these for JAX (XLA, 15-35 s each on 2 CPU cores) would push make test past its budget: they run under
# TensorFlow only; ResNet50, VGG16, ConvNeXtTiny and the DenseNet concatenation test run under both backends.
ONE_BACKEND = {"DenseNet121", "EfficientNetB0", "MobileNetV2", "MobileNetV3Small"}


def application(name):
    keras.utils.set_random_seed(0)
    return APPLICATIONS[name](weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.large_network) if n in ONE_BACKEND else n
                                  for n in sorted(APPLICATIONS)])
def test_prune_30_percent_equals_the_masked_original(name, images):
    model = application(name)
    result = surgery.prune(model, 0.3, x=images)
    summary = result.summary()
    assert result.relative_difference < 1e-4, summary
    assert summary["params_after"] < 0.95 * summary["params_before"]
    assert summary["macs_after"] < summary["macs_before"]
    blocked = result.report[result.report.status.str.startswith("blocked")]
    # every model's logits layer is blocked (the output); ConvNeXt's residual stream by its LayerNormalizations
    assert blocked.status.str.contains("model's output").sum() == 1
    if name == "ConvNeXtTiny":
        assert len(blocked) == 5 and blocked.status.str.contains("LayerNormalization").sum() == 4
    else:
        assert len(blocked) == 1
    assert result.model.predict(images, verbose=0).shape == (4, 10)


@pytest.mark.slow
def test_convnext_exact_false_prunes_the_residual_stream_and_reports_the_difference(images):
    model = application("ConvNeXtTiny")
    result = surgery.prune(model, 0.3, x=images, exact=False)
    assert result.summary()["groups_pruned"] == len(result.report) - 1
    assert result.relative_difference > 1e-3  # LayerNorm statistics over fewer channels: a real difference
    assert any("layernorm" in path for path in result.approximate_layers)


def zero_batchnorm_channels(model, names, channels):
    """A copy in which the given BatchNorms output exactly 0 on ``channels`` (gamma = beta = 0)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in names:
        gamma, beta, mean, variance = copy.get_layer(name).get_weights()
        gamma[channels], beta[channels] = 0.0, 0.0
        copy.get_layer(name).set_weights([gamma, beta, mean, variance])
    return copy


@pytest.mark.slow
def test_resnet50_residual_group_against_a_hand_zeroed_reference(images):
    """Stage 2's residual stream: the shortcut conv and each block's last conv meet at Adds. Zeroing their
    BatchNorms' output channels by hand zeroes the channel everywhere the group carries it."""
    model = application("ResNet50")
    producers = ["conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv"]
    assert set(surgery.dependency_group(model, "conv2_block2_3_conv")) == set(producers)
    removed = [0, 5, 17, 200]
    pruned = surgery.remove_units(model, "conv2_block2_3_conv", removed)
    for name in producers:
        assert pruned.get_layer(name).filters == 256 - 4
    assert pruned.get_layer("conv3_block1_1_conv").kernel.shape[2] == 256 - 4   # next stage reads 252 channels
    reference = zero_batchnorm_channels(model, [p.replace("_conv", "_bn") for p in producers], removed)
    expected = reference.predict(images, verbose=0)
    np.testing.assert_allclose(pruned.predict(images, verbose=0), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_densenet_concatenation_offsets_against_a_hand_zeroed_reference(images):
    """DenseNet121's first dense block concatenates the stem (64 channels) with six 32-channel layers; removing
    channels of its second layer's conv2 shifts the indices every later BatchNorm and conv reads."""
    model = application("DenseNet121")
    removed = [1, 30]
    pruned = surgery.remove_units(model, "conv2_block2_2_conv", removed)
    # conv2_block3's BN reads [stem 64 | block1 32 | block2 32]: block2's channels sit at offset 96
    assert pruned.get_layer("conv2_block3_0_bn").get_weights()[0].shape == (128 - 2,)
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    conv = reference.get_layer("conv2_block2_2_conv")
    kernel, = conv.get_weights()
    kernel[..., removed] = 0.0   # the conv has no bias and no activation: its channels are exactly 0
    conv.set_weights([kernel])
    expected = reference.predict(images, verbose=0)
    # a zero channel is not zero after each later BatchNorm: zero those BNs' gamma/beta at the offset too
    for layer in reference.layers:
        if isinstance(layer, L.BatchNormalization) and layer.name.startswith(("conv2_block", "pool2_bn")):
            block = layer.name.split("_")[1]
            if layer.name == "pool2_bn" or (block.startswith("block") and int(block[5:]) >= 3 and
                                            layer.name.endswith("_0_bn")):
                gamma, beta, mean, variance = layer.get_weights()
                gamma[[96 + r for r in removed]] = 0.0
                beta[[96 + r for r in removed]] = 0.0
                layer.set_weights([gamma, beta, mean, variance])
    expected = reference.predict(images, verbose=0)
    np.testing.assert_allclose(pruned.predict(images, verbose=0), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def encoder_block(seed=0, length=6, width=16, heads=4, hidden=32):
    """A Keras transformer encoder block: MHA + residual + LayerNorm, MLP + residual + LayerNorm, mean-pooled."""
    keras.utils.set_random_seed(seed)
    tokens = L.Input((length, width), name="tokens")
    attended = L.MultiHeadAttention(heads, key_dim=width // heads, name="attention")(tokens, tokens)
    h = L.LayerNormalization(name="norm_1")(L.Add(name="residual_1")([tokens, attended]))
    mlp = L.Dense(hidden, activation="gelu", name="mlp_1")(h)
    mlp = L.Dense(width, name="mlp_2")(mlp)
    h = L.LayerNormalization(name="norm_2")(L.Add(name="residual_2")([h, mlp]))
    return keras.Model(tokens, L.Dense(3, name="logits")(L.GlobalAveragePooling1D(name="pool")(h)))


def test_transformer_block_prunes_its_mlp_and_heads_and_refuses_the_residual_stream():
    model = encoder_block()
    x = np.random.default_rng(1).normal(size=(5, 6, 16)).astype("float32")
    result = surgery.prune(model, 0.3, x=x)
    assert result.model.get_layer("mlp_1").units == 32 - 9
    assert result.relative_difference < 1e-5
    statuses = result.report.set_index("producers").status
    assert "norm_1" in statuses["attention, mlp_2"] and "the model input 'tokens'" in statuses["attention, mlp_2"]
    # MLP hidden units by hand: zero mlp_2's input rows
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    kernel, bias = reference.get_layer("mlp_2").get_weights()
    kernel[result.removed["mlp_1"]] = 0.0
    reference.get_layer("mlp_2").set_weights([kernel, bias])
    np.testing.assert_allclose(result.model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
    # heads: the new layer has 3 heads; equal to zeroing head 2's rows of the output projection by hand
    pruned = surgery.remove_heads(model, "attention", [2])
    assert pruned.get_layer("attention").num_heads == 3
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    output_dense = reference.get_layer("attention").output_dense
    kernel = output_dense.kernel.numpy()
    kernel[2] = 0.0
    output_dense.kernel.assign(kernel)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
    assert surgery.verify_equivalence(model, pruned, "attention", None, x, heads=[2]) < 1e-5
    with pytest.raises(ValueError, match=r"MultiHeadAttention layer. Received: layer 'mlp_1' of type Dense"):
        surgery.remove_heads(model, "mlp_1", [0])
    with pytest.raises(ValueError, match=r"cannot remove every one of the 4 heads of 'attention'"):
        surgery.remove_heads(model, "attention", [0, 1, 2, 3])
