"""Darknet interop on tiny synthetic cfgs: parsing, layer semantics against hand-derived values, weights, errors."""

from __future__ import annotations

import struct

import pytest
import torch

from cspnet.errors import ConfigError, InputError
from cspnet.interop.darknet.cfg import parse_cfg, parse_cfg_text
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.weights import DarknetHeader, read_weights, write_weights


def build(text: str) -> DarknetModel:
    return DarknetModel(parse_cfg_text(text, "t.cfg"))


def net(c: int, h: int, w: int | None = None) -> str:
    return f"[net]\nchannels={c}\nheight={h}\nwidth={w or h}\n"


IDENTITY = "[maxpool]\nsize=1\nstride=1\n"  # a layer that passes its input through, to route/shortcut from


# ---------------------------------------------------------------- parsing


def test_parse_whitespace_comments_aliases_and_lines():
    text = "# a comment\n[net]\n width = 32 \nheight=32\n; other comment\n\n[conv]\nfilters=8 # inline\nfilters=9\n"
    secs = parse_cfg_text(text, "x.cfg")
    assert [s.kind for s in secs] == ["net", "convolutional"]
    assert secs[0].getint("width") == 32 and secs[1].line == 7
    assert secs[1].getint("filters") == 8  # darknet's option_find returns the first
    assert secs[1].where == "x.cfg:7: [convolutional]"


def test_missing_net_is_refused(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text("[convolutional]\nfilters=8\n")
    with pytest.raises(
        ConfigError, match=r"bad.cfg: missing \[net\] section .*starts with \[convolutional\] at line 1"
    ):
        parse_cfg(path)
    with pytest.raises(ConfigError, match="missing"):
        parse_cfg_text("# nothing\n", "empty.cfg")


def test_unknown_layer_names_file_line_and_type():
    with pytest.raises(ConfigError, match=r"^t.cfg:5: \[lstm\] layer type is not supported"):
        build(net(3, 8) + "[lstm]\noutput=4\n")


@pytest.mark.parametrize(
    "body, match",
    [
        ("[convolutional]\nfilters=4\nactivation=gelu\n", r"t.cfg:5: \[convolutional\] activation `gelu`"),
        ("[convolutional]\nfilters=4\ndilation=2\n", r"t.cfg:5: .*`dilation=2` is not supported"),
        ("[convolutional]\nfilters=4\nsize=abc\n", r"t.cfg:7: \[convolutional\] `size=abc` is not an integer"),
        # issue #9 defect 6: misspelled keys, with file:line and a did-you-mean
        (
            "[convolutional]\nfiltres=8\n",
            r"^t.cfg:6: \[convolutional\] unknown key `filtres`; did you mean `filters`\?$",
        ),
        ("[maxpool]\nsize=2\nstrid=2\n", r"^t.cfg:7: \[maxpool\] unknown key `strid`; did you mean `stride`\?$"),
        ("[avgpool]\nsize=2\n", r"^t.cfg:6: \[avgpool\] unknown key `size`; \[avgpool\] reads: "),
        # issue #9: bad values are one located line, not a traceback
        ("[convolutional]\nfilters=0\n", r"^t.cfg:6: \[convolutional\] `filters=0` must be >= 1$"),
        ("[convolutional]\nfilters=-8\n", r"`filters=-8` must be >= 1"),
        ("[convolutional]\nfilters=4\nsize=-3\n", r"t.cfg:7: \[convolutional\] `size=-3` must be >= 1"),
        ("[convolutional]\nfilters=4\nstride=0\n", r"`stride=0` must be >= 1"),
        ("[convolutional]\nfilters=4\ngroups=0\n", r"`groups=0` must be >= 1"),
        ("[maxpool]\nstride=0\n", r"\[maxpool\] `stride=0` must be >= 1"),
        ("[connected]\noutput=-4\n", r"t.cfg:6: \[connected\] `output=-4` must be >= 1"),
        ("[dropout]\nprobability=1.5\n", r"t.cfg:6: \[dropout\] `probability=1.5` must be in \[0, 1\)"),
        ("[dropout]\nprobability=nan\n", r"`probability=nan` is not a finite number"),
        ("[softmax]\ngroups=0\n", r"`groups=0` must be >= 1"),
        ("[upsample]\nstride=0\n", r"t.cfg:6: \[upsample\] stride=0"),
        (IDENTITY + "[shortcut]\nfrom=-5\n", r"t.cfg:9: \[shortcut\] `from` refers to layer -5"),
        (IDENTITY + "[shortcut]\nfrom=7\n", r"`from` refers to layer 7"),
        (IDENTITY + "[yolo]\nclasses=0\n", r"`classes=0` must be >= 1"),
        ("[convolutional]\nfilters=4\ngroups=2\n", r"groups=2 must divide the 3 input channels"),
        ("[route]\nlayers=-1\n", r"t.cfg:6: \[route\] `layers` refers to layer -1"),
        (IDENTITY + "[route]\nlayers=3\n", r"t.cfg:9: \[route\] `layers` refers to layer 3"),
        (IDENTITY + "[yolo]\nclasses=1\nnum=1\nanchors=1,1\n", r"has 3 filters but 1 anchors .* set filters=6"),
        ("[shortcut]\n", r"needs `from=`"),
        ("oops\n", r"expected key=value"),
    ],
)
def test_bad_layers_are_located(body, match):
    with pytest.raises(ConfigError, match=match):
        build(net(3, 8) + body)


def test_real_cfgs_parse_and_build(darknet_dir):
    """The key allow-list and value checks accept every official cfg in ../shared/darknet."""
    cfgs = sorted(darknet_dir.glob("*.cfg"))
    assert len(cfgs) >= 10
    for path in cfgs:
        with torch.device("meta"):
            model = DarknetModel.from_cfg(path)
        assert model.num_weight_values() > 0, path


def test_cfg_without_weighted_layer(tmp_path, capsys):
    from cspnet.cli import main

    (tmp_path / "p.cfg").write_text(net(3, 8) + "[maxpool]\nsize=2\nstride=2\n")
    write_weights(build(net(3, 8) + "[maxpool]\nsize=2\nstride=2\n"), tmp_path / "p.weights")
    assert main(["darknet", "info", str(tmp_path / "p.cfg")]) == 0  # a table, not StopIteration
    assert "0.000M params" in capsys.readouterr().out
    assert (
        main(["darknet", "convert", str(tmp_path / "p.cfg"), str(tmp_path / "p.weights"), str(tmp_path / "o.pt")]) == 2
    )
    assert "has no layer with weights" in capsys.readouterr().err and not (tmp_path / "o.pt").exists()


def test_convert_refuses_overwrite_and_its_inputs(tmp_path, capsys):
    """Issue #9 defect 2: an existing output needs --force; an input is never an output; no temp file is left."""
    from cspnet.cli import main
    from cspnet.models.weights import read_state_dict

    text = net(3, 8) + "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
    cfg, weights, out = tmp_path / "a.cfg", tmp_path / "a.weights", tmp_path / "a.safetensors"
    cfg.write_text(text)
    write_weights(build(text), weights)
    before = {p: p.read_bytes() for p in (cfg, weights)}
    for target in (cfg, weights):
        assert main(["darknet", "convert", str(cfg), str(weights), str(target), "--force"]) == 2
        assert "is also the input" in capsys.readouterr().err
    assert main(["darknet", "convert", str(cfg), str(weights), str(out)]) == 0
    out.write_bytes(b"keep me")
    assert main(["darknet", "convert", str(cfg), str(weights), str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["darknet", "convert", str(cfg), str(weights), str(out), "--force"]) == 0
    assert set(read_state_dict(out)) == {"layers.0.conv.weight", "layers.0.conv.bias"}
    (tmp_path / "d").mkdir()
    assert main(["darknet", "convert", str(cfg), str(weights), str(tmp_path / "d"), "--force"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (cfg, weights)} == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.cfg", "a.safetensors", "a.weights", "d"]  # no *.tmp


def test_option_before_section():
    with pytest.raises(ConfigError, match=r"t.cfg:1: option 'width=3' before any \[section\]"):
        parse_cfg_text("width=3\n[net]\n", "t.cfg")


# ---------------------------------------------------------------- layer semantics


def darknet_maxpool(x: torch.Tensor, size: int, stride: int, padding: int) -> torch.Tensor:
    """darknet's forward_maxpool_layer, loop for loop: offset -padding/2, out-of-range cells skipped."""
    c, h, w = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    off = -(padding // 2)
    out = torch.empty(c, oh, ow)
    for k in range(c):
        for i in range(oh):
            for j in range(ow):
                best = -3.4e38
                for n in range(size):
                    for m in range(size):
                        y, xx = off + i * stride + n, off + j * stride + m
                        if 0 <= y < h and 0 <= xx < w:
                            best = max(best, x[k, y, xx].item())
                out[k, i, j] = best
    return out


@pytest.mark.parametrize(
    "h, size, stride, padding",
    [
        (8, 2, 2, None),  # resnet stem: default padding = size-1, no effect on even sizes
        (7, 2, 2, None),  # odd size: darknet keeps the last, half-empty window (output 4, not 3)
        (6, 5, 1, None),  # SPP: stride 1 keeps the size
        (6, 9, 1, None),
        (5, 2, 1, None),  # yolov3-tiny's stride-1 2x2: padding only after
        (7, 3, 2, 0),
    ],
)
def test_maxpool_matches_darknet_loop(h, size, stride, padding):
    pad = "" if padding is None else f"padding={padding}\n"
    m = build(net(2, h) + f"[maxpool]\nsize={size}\nstride={stride}\n{pad}")
    x = torch.randn(1, 2, h, h)
    ref = darknet_maxpool(x[0], size, stride, size - 1 if padding is None else padding)
    out = m(x)
    assert out.shape[1:] == ref.shape and tuple(m.shapes[0]) == tuple(ref.shape)
    torch.testing.assert_close(out[0], ref, rtol=0, atol=0)


def test_maxpool_odd_input_hand_values():
    # 3x3 input, size 2 stride 2, padding 1 (offset 0): windows rows/cols {0,1} and {2}
    m = build(net(1, 3) + "[maxpool]\nsize=2\nstride=2\n")
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 4.0, 9.0], [8.0, 0.0, 6.0]]).view(1, 1, 3, 3)
    assert m(x).view(2, 2).tolist() == [[5.0, 9.0], [8.0, 6.0]]


def test_route_groups_take_a_slice_of_each_input():
    m = build(net(4, 2) + IDENTITY + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n[route]\nlayers=0,1\ngroups=2\n")
    x = torch.arange(16.0).view(1, 4, 2, 2)
    outs = m.forward_layers(x, keep_all=True)
    assert torch.equal(outs[1], x[:, 2:4])  # channels 2,3 of layer 0
    assert torch.equal(outs[2], torch.cat([x[:, 0:2], x[:, 2:3]], 1))  # half of layer 0, half of layer 1
    assert m.shapes[1] == (2, 2, 2) and m.shapes[2] == (3, 2, 2)


def test_shortcut_same_shape_and_activation():
    m = build(net(2, 2) + IDENTITY + IDENTITY + "[shortcut]\nfrom=-2\nactivation=leaky\n")
    x = torch.tensor([-1.0, 2.0]).repeat_interleave(4).view(1, 2, 2, 2)
    out = m(x)
    assert torch.allclose(out, torch.where(2 * x > 0, 2 * x, 0.2 * x))


def test_shortcut_across_shapes_old_darknet():
    # from a 2-channel 4x4 map into a 3-channel 2x2 one: stride 2, the first 2 channels are added
    m = build(
        net(2, 4) + IDENTITY + "[convolutional]\nfilters=3\nsize=1\nstride=2\nactivation=linear\n[shortcut]\nfrom=-2\n"
    )
    with torch.no_grad():
        m.layers[1].conv.weight.zero_()
        m.layers[1].conv.bias.copy_(torch.tensor([100.0, 200.0, 300.0]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    out = m(x)
    expect = torch.tensor([100.0, 200.0, 300.0]).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    expect[:, :2] += x[:, :, ::2, ::2]
    assert torch.equal(out, expect)


def test_shortcut_from_a_smaller_map_old_darknet():
    # from a 2-channel 2x2 map into a 1-channel 4x4 one: every second cell of the first channel gets the add
    m = build(
        net(2, 2) + IDENTITY + "[upsample]\nstride=2\n[convolutional]\nfilters=1\nsize=1\nactivation=linear\n"
        "[shortcut]\nfrom=0\n"
    )
    with torch.no_grad():
        m.layers[2].conv.weight.zero_()
        m.layers[2].conv.bias.fill_(1.0)
    x = torch.arange(8.0).view(1, 2, 2, 2)
    expect = torch.ones(1, 1, 4, 4)
    expect[:, :, ::2, ::2] += x[:, :1]
    assert torch.equal(m(x), expect)


def test_net_without_input_size():
    with pytest.raises(ConfigError, match=r"t.cfg:1: \[net\] needs width= and height="):
        build("[net]\nchannels=3\n" + IDENTITY)


def sig(t: float) -> float:
    return 1.0 / (1.0 + torch.exp(torch.tensor(-t)).item())


def test_yolo_decoding_with_scale_x_y():
    # 1 anchor (10x14 px), 1 class, 2x2 grid on a 64x64 input: stride 32
    m = build(net(6, 2) + IDENTITY + "[yolo]\nmask=0\nanchors=10,14\nclasses=1\nnum=1\nscale_x_y=1.2\n")
    t = torch.randn(1, 6, 2, 2)
    boxes = m.layers[1].decode(m.layers[1](t, {}), (64, 64))
    assert boxes.shape == (1, 4, 6)
    for j in range(2):
        for i in range(2):
            tx, ty, tw, th, to, tc = t[0, :, j, i].tolist()
            row = boxes[0, j * 2 + i].tolist()
            expect = [
                (sig(tx) * 1.2 - 0.1 + i) * 32,
                (sig(ty) * 1.2 - 0.1 + j) * 32,
                torch.exp(torch.tensor(tw)).item() * 10,
                torch.exp(torch.tensor(th)).item() * 14,
                sig(to),
                sig(tc),
            ]
            assert row == pytest.approx(expect, rel=1e-5, abs=1e-5)
    # the model's forward returns the same decoded boxes, for a 2x2 map from a 2x2 input: stride 1
    assert torch.allclose(m(t), m.layers[1].decode(m.layers[1](t, {}), (2, 2)))


def test_yolo_new_coords_and_anchor_mask():
    cfg = (
        net(12, 1) + IDENTITY + "[yolo]\nmask=2,0\nanchors=1,2,3,4,5,6\nnum=3\nclasses=1\nscale_x_y=2.0\nnew_coords=1\n"
    )
    m = build(cfg)
    t = torch.rand(1, 12, 1, 1)  # new_coords: the conv already applied the logistic
    boxes = m(t)
    a0, a1 = t[0, :6, 0, 0].tolist(), t[0, 6:, 0, 0].tolist()
    assert boxes[0, 0].tolist() == pytest.approx(
        [a0[0] * 2 - 0.5, a0[1] * 2 - 0.5, 4 * a0[2] ** 2 * 5, 4 * a0[3] ** 2 * 6, a0[4], a0[5]]
    )
    assert boxes[0, 1, 2:4].tolist() == pytest.approx([4 * a1[2] ** 2 * 1, 4 * a1[3] ** 2 * 2])


def test_activations_pool_upsample_softmax_dropout():
    m = build(
        net(2, 4)
        + "[convolutional]\nfilters=2\nsize=1\nactivation=mish\n"
        + "[convolutional]\nfilters=2\nsize=1\nactivation=swish\n"
        + "[convolutional]\nfilters=2\nsize=1\nactivation=logistic\n"
        + "[upsample]\nstride=2\n[dropout]\nprobability=0.5\n[avgpool]\n[softmax]\ngroups=1\n"
    )
    m.eval()
    x = torch.randn(1, 2, 4, 4)
    outs = m.forward_layers(x, keep_all=True)
    c0, c1, c2 = (m.layers[i].conv for i in range(3))
    y = torch.nn.functional.conv2d(x, c0.weight, c0.bias)
    assert torch.allclose(outs[0], y * torch.tanh(torch.nn.functional.softplus(y)), atol=1e-6)
    y = torch.nn.functional.conv2d(outs[0], c1.weight, c1.bias)
    assert torch.allclose(outs[1], y * torch.sigmoid(y), atol=1e-6)
    y = torch.nn.functional.conv2d(outs[1], c2.weight, c2.bias)
    assert torch.allclose(outs[2], torch.sigmoid(y), atol=1e-6)
    assert outs[3].shape == (1, 2, 8, 8) and torch.equal(outs[3][:, :, ::2, ::2], outs[2])
    assert torch.equal(outs[4], outs[3])  # dropout is the identity in eval
    assert torch.allclose(outs[5].flatten(1), outs[2].mean((2, 3)), atol=1e-6)
    assert torch.allclose(outs[6], outs[5].flatten(1).softmax(1)) and m(x).shape == (1, 2)


def test_connected_layer_and_fixed_input_size():
    m = build(net(2, 3) + "[connected]\noutput=5\nactivation=linear\n")
    x = torch.randn(1, 2, 3, 3)
    fc = m.layers[0].fc
    assert torch.allclose(m(x).flatten(1), x.flatten(1) @ fc.weight.T + fc.bias)
    with pytest.raises(InputError, match="built for 3x3 inputs"):
        m(torch.randn(1, 2, 4, 4))
    with pytest.raises(InputError, match=r"expected a batch shaped \(N, 2, H, W\)"):
        m(torch.randn(1, 3, 3, 3))


# ---------------------------------------------------------------- weights


WCFG = (
    net(1, 2)
    + "[convolutional]\nbatch_normalize=1\nfilters=2\nsize=1\nactivation=leaky\n"
    + "[convolutional]\nfilters=2\nsize=1\ngroups=2\nactivation=linear\n"
    + "[connected]\noutput=2\nactivation=linear\n"
    + "[connected]\nbatch_normalize=1\noutput=1\nactivation=linear\n"
)


def test_weights_are_read_in_darknet_order(tmp_path):
    m = build(WCFG)
    n = m.num_weight_values()
    path = tmp_path / "w.weights"
    path.write_bytes(struct.pack("<3iQ", 0, 2, 5, 1234) + struct.pack(f"<{n}f", *range(n)))
    head = read_weights(m, path)
    assert head == DarknetHeader(0, 2, 5, 1234)
    conv, bn = m.layers[0].conv, m.layers[0].bn
    assert bn.bias.tolist() == [0, 1] and bn.weight.tolist() == [2, 3]  # biases (beta), then scales (gamma)
    assert bn.running_mean.tolist() == [4, 5] and bn.running_var.tolist() == [6, 7]
    assert conv.weight.flatten().tolist() == [8, 9]
    g = m.layers[1].conv  # no BN: biases then weights
    assert g.bias.tolist() == [10, 11] and g.weight.flatten().tolist() == [12, 13]
    fc = m.layers[2].fc  # connected: biases, then weights as (outputs, inputs)
    assert fc.bias.tolist() == [14, 15] and fc.weight.tolist() == [[16, 17, 18, 19, 20, 21, 22, 23]] + [
        list(range(24, 32))
    ]
    fc2, bn2 = m.layers[3].fc, m.layers[3].bn  # connected + BN: biases, weights, scales, mean, variance
    assert bn2.bias.tolist() == [32] and fc2.weight.tolist() == [[33, 34]]
    assert [bn2.weight.item(), bn2.running_mean.item(), bn2.running_var.item()] == [35, 36, 37]


def randomize(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.1)


@pytest.mark.parametrize("header", [DarknetHeader(0, 2, 0, 2**40 + 7), DarknetHeader(0, 1, 0, 123456)])
def test_weights_round_trip_bit_exact(tmp_path, header):
    a, b = build(WCFG), build(WCFG)
    randomize(a)
    path = write_weights(a, tmp_path / "a.weights", header)
    assert path.stat().st_size == header.nbytes + 4 * a.num_weight_values()
    assert header.nbytes == (20 if header.minor == 2 else 16)
    assert read_weights(b, path) == header
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(sa[k], sb[k]), k
    write_weights(b, tmp_path / "b.weights", header)
    assert (tmp_path / "b.weights").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("delta, word", [(-3, "truncated: it is short by 3"), (2, "too long: it has extra values")])
def test_wrong_length_is_refused_and_nothing_loaded(tmp_path, delta, word):
    a, b = build(WCFG), build(WCFG)
    randomize(a)
    data = write_weights(a, tmp_path / "a.weights").read_bytes()
    bad = tmp_path / "bad.weights"
    bad.write_bytes(data[: len(data) + 4 * delta] if delta < 0 else data + b"\0" * 4 * delta)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    n = a.num_weight_values()
    with pytest.raises(InputError, match=rf"holds {n + delta} values after the header but t.cfg needs {n} \({word}"):
        read_weights(b, bad)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_bad_header_and_missing_file(tmp_path):
    m = build(WCFG)
    (tmp_path / "h.weights").write_bytes(b"\0" * 7)
    with pytest.raises(InputError, match="too short for a darknet header"):
        read_weights(m, tmp_path / "h.weights")
    (tmp_path / "h2.weights").write_bytes(struct.pack("<3i", 0, 2, 0) + b"\0" * 4)
    with pytest.raises(InputError, match="header is cut off"):
        read_weights(m, tmp_path / "h2.weights")
    with pytest.raises(InputError, match="not found"):
        read_weights(m, tmp_path / "nope.weights")
