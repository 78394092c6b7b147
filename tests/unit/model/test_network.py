"""Tests for dla.model.network: presets, receptive field, valid-conv geometry, weights I/O."""

import pytest
import torch

from dla.model.network import (
    PRESETS,
    DLANet,
    IncompatibleWeightsError,
    InvalidNetworkConfigError,
    NetworkConfig,
    build_model,
    config_fingerprint,
    count_parameters,
    load_weights,
    normalize_hu,
    preset_config,
    save_weights,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_with_receptive_field_41(name):
    torch.manual_seed(0)
    model = build_model(name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # independent receptive field: 1 + sum (k-1)*dilation over the actual conv modules
    rf = 1 + sum((m.kernel_size[0] - 1) * m.dilation[0] for m in convs)
    assert rf == 41 == model.receptive_field
    x = torch.randn(2, 5, 41 + 7, 41 + 3)
    assert model(x).shape == (2, 3, 8, 4)


def test_paper_preset_has_30_conv_layers_and_3x3_after_input():
    model = build_model("paper")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 30 == model.num_conv_layers
    # all layers except input and the final 1x1 "fully connected" layer are 3x3 or 1x1 (no dilation)
    assert all(m.kernel_size in ((3, 3), (1, 1)) and m.dilation == (1, 1) for m in convs[1:])
    assert convs[-1].out_channels == 3 and convs[-1].kernel_size == (1, 1)


def test_cpu_preset_is_small():
    model = build_model("cpu")
    assert 10 <= model.num_conv_layers <= 12
    assert count_parameters(model) < count_parameters(build_model("paper"))


def test_wrong_receptive_field_rejected():
    cfg = NetworkConfig(width=4, input_kernel=3, blocks=(((3, 1), (3, 1)),))
    with pytest.raises(InvalidNetworkConfigError, match="receptive field"):
        DLANet(cfg)
    with pytest.raises(InvalidNetworkConfigError, match="unknown network preset"):
        preset_config("huge")


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_receptive_field_by_gradient_and_perturbation(name):
    torch.manual_seed(1)
    model = build_model(name).eval()
    x = torch.randn(1, 5, 81, 81, requires_grad=True)  # output 41x41, output (20,20) <-> input (40,40)
    model(x)[0, :, 20, 20].sum().backward()
    g = x.grad[0].abs().sum(0)
    nz = torch.nonzero(g)
    assert nz[:, 0].min() == 20 and nz[:, 0].max() == 60  # exactly rows 40-20 .. 40+20
    assert nz[:, 1].min() == 20 and nz[:, 1].max() == 60
    assert (x.grad[0].abs().sum((1, 2)) > 0).all()  # all 5 slices matter
    with torch.no_grad():
        base = model(x)[0, :, 20, 20]
        far = x.detach().clone()
        far[0, :, 40 + 21, 40] += 50.0
        far[0, :, 40 - 21, 40] -= 50.0
        far[0, :, 40, 40 + 21] += 50.0
        assert torch.equal(model(far)[0, :, 20, 20], base)
        near = x.detach().clone()
        near[0, :, 40 + 20, 20:61] += 50.0  # the edge row of the receptive field
        assert not torch.allclose(model(near)[0, :, 20, 20], base)


def test_patch_equals_slab_per_voxel():
    torch.manual_seed(2)
    model = build_model("tiny").eval()
    x = torch.randn(1, 5, 41 + 6, 41 + 5)
    with torch.no_grad():
        dense = model(x)
        for i in range(7):
            for j in range(6):
                single = model(x[:, :, i : i + 41, j : j + 41])
                assert single.shape == (1, 3, 1, 1)
                assert torch.allclose(single[0, :, 0, 0], dense[0, :, i, j], atol=1e-5)


def test_he_init_variance():
    torch.manual_seed(3)
    model = build_model("paper")
    w = model.input_conv.weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - (2.0 / fan_in) ** 0.5) < 0.15 * (2.0 / fan_in) ** 0.5
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_normalize_hu():
    x = torch.tensor([-3000, -1000, 0, 1000, 2500, 3000, 5000], dtype=torch.int16)
    assert normalize_hu(x).tolist() == pytest.approx([-1, -1, 0, 1, 2.5, 3, 3])
    assert normalize_hu(x).dtype == torch.float32


def test_config_roundtrip_and_fingerprint():
    for name in PRESETS:
        cfg = preset_config(name)
        again = NetworkConfig.from_dict(cfg.to_dict())
        assert again == cfg
        assert config_fingerprint(again) == config_fingerprint(cfg)
    fps = {config_fingerprint(preset_config(n)) for n in PRESETS}
    assert len(fps) == len(PRESETS)
    wider = preset_config("cpu")
    wider.width = 24
    assert config_fingerprint(wider) != config_fingerprint(preset_config("cpu"))
    with pytest.raises(InvalidNetworkConfigError, match="unknown"):
        NetworkConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(4)
    model = build_model("tiny")
    path = tmp_path / "w.pt"
    save_weights(model, path)
    loaded = load_weights(path, expected_config=preset_config("tiny"))
    x = torch.randn(2, 5, 45, 45)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert loaded.config == model.config
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temp file


def test_incompatible_weights_refused(tmp_path):
    torch.manual_seed(5)
    path = tmp_path / "tiny.pt"
    save_weights(build_model("tiny"), path)
    with pytest.raises(IncompatibleWeightsError) as err:
        load_weights(path, expected_config=preset_config("cpu"))
    msg = str(err.value)
    assert "expected" in msg and "shape" in msg and "input_conv.weight" in msg
    # a state dict of the wrong shapes inside a file claiming a config is refused too
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["fc.weight"] = torch.zeros(3, 9, 1, 1)
    torch.save(blob, path)
    with pytest.raises(
        IncompatibleWeightsError, match=r"fc\.weight: expected \(3, 8, 1, 1\), got \(3, 9, 1, 1\)"
    ):
        load_weights(path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(IncompatibleWeightsError, match="not a readable"):
        load_weights(tmp_path / "junk.pt")
