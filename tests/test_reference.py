"""The reference model: the seed with exactly the fixes of seed/NOTES.md."""
import pytest
import torch
import torch.nn as nn

from googlenet_fused import INCEPTION_CONFIGS, GoogLeNet, Inception
from googlenet_fused.reference import SPATIAL_AT_224, minimum_image_size

TABLE1_OUT = [256, 480, 512, 512, 512, 528, 832, 832, 1024]


@pytest.mark.parametrize("size, spatial", [(224, 7), (256, 8)])
def test_output_shapes(size, spatial):
    net = GoogLeNet((3, size, size), n_classes=1000).eval()
    x = torch.randn(2, 3, size, size)
    feats = {}
    for name, m in net.inception_modules().items():
        m.register_forward_hook(lambda m, i, o, n=name: feats.__setitem__(n, o.shape))
    assert net(x).shape == (2, 1000)
    assert feats["5b"] == (2, 1024, spatial, spatial)
    if size == 224:
        for name, shape in feats.items():
            assert shape[2] == SPATIAL_AT_224[name], name


def test_channel_totals():
    assert [c.out_channels for c in INCEPTION_CONFIGS.values()] == TABLE1_OUT
    net = GoogLeNet((3, 224, 224))
    x = torch.randn(1, 3, 224, 224)
    outs = []
    for m in net.inception_modules().values():
        m.register_forward_hook(lambda m, i, o: outs.append(o.shape[1]))
    net.eval()(x)
    assert outs == TABLE1_OUT
    # each module's input is the previous module's output
    ins = [c.in_size for c in INCEPTION_CONFIGS.values()]
    assert ins[1:] == TABLE1_OUT[:-1]


def _table1_params(n_classes):
    """Parameter count from the Table 1 numbers alone (weights + biases)."""
    total = 3 * 64 * 49 + 64 + 64 * 64 + 64 + 64 * 192 * 9 + 192  # stem
    for cin, c1, c3r, c3, c5r, c5, cp in INCEPTION_CONFIGS.values():
        total += cin * c1 + c1 + cin * c3r + c3r + c3r * c3 * 9 + c3
        total += cin * c5r + c5r + c5r * c5 * 25 + c5 + cin * cp + cp
    return total + 1024 * n_classes + n_classes


@pytest.mark.parametrize("n_classes", [10, 1000, 7])
def test_parameter_count_and_classes(n_classes):
    net = GoogLeNet((3, 224, 224), n_classes=n_classes)
    assert sum(p.numel() for p in net.parameters()) == _table1_params(n_classes)
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, n_classes)


def test_default_classes_is_seed_value():
    assert GoogLeNet((3, 64, 64)).fc[1].out_features == 10


def test_state_dict_keys():
    keys = set(GoogLeNet((3, 224, 224)).state_dict())
    for k in ["prev.0.weight", "prev.4.weight", "prev.6.weight", "_1st_phase.0.case1.0.weight",
              "_1st_phase.1.case2.3.weight", "_2nd_phase.4.case3.3.bias",
              "_2nd_phase.0.case4.1.weight", "_3rd_phase.1.case1.0.weight", "fc.1.weight"]:
        assert k in keys, k
    inc = set(Inception(*INCEPTION_CONFIGS["4a"]).state_dict())
    assert inc == {f"{b}.{i}.{p}" for b, idx in
                   [("case1", [0]), ("case2", [0, 3]), ("case3", [0, 3]), ("case4", [1])]
                   for i in idx for p in ("weight", "bias")}


def test_lrn_before_relu_in_every_branch():
    m = Inception(*INCEPTION_CONFIGS["3a"])
    for branch in (m.case1, m.case2, m.case3, m.case4):
        layers = list(branch)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Conv2d):
                lrn, relu = layers[i + 1], layers[i + 2]
                assert isinstance(lrn, nn.LocalResponseNorm) and isinstance(relu, nn.ReLU)
                assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-3, 0.75, 2)
    assert m.case3[3].padding == (2, 2)  # fix 2


def test_stem_fixes():
    prev = GoogLeNet((3, 224, 224)).prev
    assert (prev[0].out_channels, prev[0].stride, prev[0].padding) == (64, (2, 2), (3, 3))
    assert prev[6].padding == (1, 1)
    assert prev[2].ceil_mode and prev[9].ceil_mode


def test_inception_forward_matches_definition():
    m = Inception(5, 3, 2, 4, 1, 2, 3).eval()
    x = torch.randn(2, 5, 6, 6)
    expected = torch.cat([m.case1(x), m.case2(x), m.case3(x), m.case4(x)], 1)
    torch.testing.assert_close(m(x), expected)
    assert m(x).shape == (2, 3 + 4 + 2 + 3, 6, 6)


@pytest.mark.parametrize("arg", range(7))
@pytest.mark.parametrize("bad", [0, -3])
def test_nonpositive_channels_rejected(arg, bad):
    names = ["in_size", "_1by1", "_3by3red", "_3by3", "_5by5_red", "_5by5", "pool_size"]
    values = [8] * 7
    values[arg] = bad
    with pytest.raises(ValueError, match=names[arg]):
        Inception(*values)


def test_bad_images_rejected():
    net = GoogLeNet((3, 64, 64))
    with pytest.raises(ValueError, match=r"3 input channels.*\(2, 1, 64, 64\)"):
        net(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="4-D"):
        net(torch.randn(3, 64, 64))
    smallest = minimum_image_size()
    with pytest.raises(ValueError, match=f"at least {smallest}"):
        net(torch.randn(1, 3, smallest - 1, smallest - 1))
    net.eval()(torch.randn(1, 3, smallest, smallest))  # the stated minimum works
    with pytest.raises(ValueError, match="at least"):
        GoogLeNet((3, smallest - 1, smallest - 1))
    with pytest.raises(ValueError, match="n_classes"):
        GoogLeNet((3, 64, 64), n_classes=0)
    with pytest.raises(ValueError, match=r"\[N, 480, H, W\]"):
        Inception(*INCEPTION_CONFIGS["4a"])(torch.randn(1, 479, 7, 7))


@pytest.mark.parametrize("stride, padding, ceil_mode", [(2, 0, True), (2, 1, False),
                                                        (2, 0, False), (2, 1, True), (1, 1, False)])
def test_window_output_size_is_pytorchs(stride, padding, ceil_mode):
    """The size rule behind minimum_image_size, against what F.max_pool2d produces (or refuses):
    with ceil_mode a window may run past the input's end."""
    import torch.nn.functional as F

    from googlenet_fused.reference import _conv_out

    for size in range(1, 30):
        try:
            expected = F.max_pool2d(torch.zeros(1, 1, size, 1), (3, 1), (stride, 1),
                                    (padding, 0), ceil_mode=ceil_mode).shape[2]
        except RuntimeError:  # too small
            expected = 0
        assert _conv_out(size, 3, stride, padding, ceil_mode) == expected, size
