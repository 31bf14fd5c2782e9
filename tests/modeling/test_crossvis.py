"""The composed CrossVIS model with a tiny CPU config: training losses, online inference, init loading."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

import crossvis.modeling.crossvis as crossvis_module
from crossvis.checkpoint.released import init_model
from crossvis.modeling.crossvis import CrossVIS

from helpers import MODEL_CONF, post_processing, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore:backbone frozen_bn=true with random")

H, W = 64, 96


def make_batch(batch: int = 2):
    """Pairs with two moving rectangles each; identity 2b and 2b+1 per pair."""
    images = torch.rand(batch, 2, 3, H, W) * 255
    targets = []
    for b in range(batch):
        pair = []
        for k in range(2):
            boxes = torch.tensor([[8 + 4 * k, 8, 40 + 4 * k, 48], [50, 4 + 2 * k, 90, 30 + 2 * k]], dtype=torch.float32)
            masks = torch.zeros(2, H, W, dtype=torch.bool)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
                masks[i, y1:y2, x1:x2] = True
            identities = torch.tensor([2 * b, 2 * b + 1])
            pair.append(dict(masks=masks, boxes=boxes, labels=torch.tensor([0, 2]), identities=identities))
        targets.append(pair)
    return images, torch.tensor([[[H, W], [H, W]]] * batch), targets


def test_default_config_keys():
    with initialize_config_dir(config_dir=str(MODEL_CONF), version_base=None):
        cfg = compose("default")
    assert cfg.backbone.name == "resnet50" and cfg.backbone.freeze_at == 2 and cfg.backbone.frozen_bn
    assert cfg.feature_grad_scale == 0.1 and cfg.fpn_channels == 256
    assert (cfg.head.num_convs, cfg.head.channels, cfg.head.prior_prob) == (4, 256, 0.01)
    assert list(cfg.fcos.sizes_of_interest) == [64, 128, 256, 512] and cfg.fcos.center_sampling_radius == 1.5
    assert (cfg.mask_branch.channels, cfg.mask_branch.num_convs, cfg.mask_branch.out_channels) == (128, 4, 8)
    assert (cfg.dynamic_head.channels, cfg.dynamic_head.num_layers) == (8, 3)
    assert cfg.mask.max_proposals == 500 and list(cfg.mask.soi) == [64, 128, 256, 512, 1024]
    assert cfg.crossover.enabled and cfg.crossover.weight == 1.0
    assert (cfg.embedding.type, cfg.embedding.loss, cfg.embedding.dim) == ("global", "focal", 256)
    inf = post_processing()  # inference.detection (conf/inference/default.yaml)
    assert (inf.score_threshold, inf.pre_nms_topk, inf.nms_threshold, inf.max_detections, inf.mask_threshold) == (
        0.05,
        1000,
        0.6,
        100,
        0.5,
    )
    assert cfg.init_from is None and cfg.init_strict
    assert cfg.upsample == "aligned_bilinear" and cfg.fcos.box_loss == "iou_plus1"  # AdelaiDet semantics


@pytest.mark.parametrize("kind", ["global", "pairwise"])
@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_forward_train_losses_and_gradients(kind, loss):
    torch.manual_seed(0)
    model = CrossVIS(tiny_spec(f"embedding.type={kind}", f"embedding.loss={loss}"), num_classes=3, num_identities=4)
    losses = model.forward_train(*make_batch())
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr", "loss_mask", "loss_cross", "loss_id"}
    assert all(v.dim() == 0 and torch.isfinite(v) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.controller.weight.grad.abs().sum() > 0
    assert model.embedding.pred.weight.grad.abs().sum() > 0
    assert model.mask_branch.tower[-1].weight.grad.abs().sum() > 0
    body = model.features.backbone.body
    assert body.layer2[0].downsample[0].weight.grad.abs().sum() > 0  # (random residual branches: zero-init frozen BN)
    assert body.layer1[0].conv1.weight.grad is None  # frozen first stage


def test_crossover_disabled_gives_zero():
    torch.manual_seed(0)
    model = CrossVIS(tiny_spec("crossover.enabled=false"), num_classes=3, num_identities=4)
    assert model.forward_train(*make_batch())["loss_cross"].item() == 0.0


def test_crossover_weight_scales_the_loss():
    losses = {}
    for weight in (1.0, 0.5):
        torch.manual_seed(0)
        model = CrossVIS(tiny_spec(f"crossover.weight={weight}"), num_classes=3, num_identities=4)
        torch.manual_seed(1)
        batch = make_batch()
        torch.manual_seed(2)
        losses[weight] = model.forward_train(*batch)["loss_cross"].item()
    assert losses[0.5] == pytest.approx(0.5 * losses[1.0], rel=1e-5)


def test_forward_train_rejects_bad_shapes():
    model = CrossVIS(tiny_spec(), num_classes=3, num_identities=4)
    images, sizes, targets = make_batch(1)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.forward_train(images[..., :60, :], sizes, targets)
    with pytest.raises(ValueError, match="image_sizes"):
        model.forward_train(images, sizes[:, 0], targets)
    with pytest.raises(ValueError, match="targets"):
        model.forward_train(images, sizes, [targets[0][:1]])


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_forward_infer_outputs(size, monkeypatch):
    def no_crossover(*args, **kwargs):
        raise AssertionError("inference must not call the crossover")

    monkeypatch.setattr(crossvis_module, "crossover_loss", no_crossover)
    torch.manual_seed(0)
    model = CrossVIS(tiny_spec(), num_classes=3, num_identities=4).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(4.0)  # make every location a confident detection
    orig = (2 * size[0] + 1, 2 * size[1] - 3)
    image = torch.rand(3, *size) * 255
    out = model.forward_infer(image, orig, post_processing())
    assert set(out) == {"boxes", "labels", "scores", "masks", "embeddings"}
    k = out["boxes"].shape[0]
    assert 0 < k <= 100
    assert out["boxes"].shape == (k, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (k,) and out["labels"].dtype == torch.long and out["labels"].max() < 3
    assert out["scores"].shape == (k,) and out["scores"].dtype == torch.float32
    assert (out["scores"][:-1] >= out["scores"][1:]).all() and (out["scores"] <= 1).all()
    assert out["masks"].shape == (k, *orig) and out["masks"].dtype == torch.bool
    assert out["embeddings"].shape == (k, 16)
    # Unnormalised rows of the dense embedding map (MaskTrack R-CNN scoring uses raw dot products).
    with torch.no_grad():
        dense = model._dense(crossvis_module.pad_to_multiple(image[None], 32), torch.tensor([size]))[3][0]
    assert torch.cdist(out["embeddings"], dense).min(dim=1).values.max() < 1e-2
    assert not torch.allclose(out["embeddings"].norm(dim=1), torch.ones(k), atol=1e-2)
    boxes = out["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= orig[1] + 1e-3).all() and (boxes[:, 3] <= orig[0] + 1e-3).all()


@pytest.mark.parametrize(
    ("override", "changed", "unchanged"),
    [("fcos.box_loss=giou_pixels", "loss_box", "loss_mask"), ("upsample=pixel_center", "loss_mask", "loss_box")],
)
def test_reference_semantics_options_change_what_they_claim(override, changed, unchanged):
    def losses(*overrides):
        torch.manual_seed(0)
        model = CrossVIS(tiny_spec(*overrides), num_classes=3, num_identities=4)
        torch.manual_seed(1)
        return model.forward_train(*make_batch())

    reference, option = losses(), losses(override)
    assert torch.allclose(reference[unchanged], option[unchanged])
    assert not torch.allclose(reference[changed], option[changed])
    with pytest.raises(ValueError, match="model." + override.split("=")[0] + "='bogus'"):  # the config key
        tiny_spec(override.split("=")[0] + "=bogus")


def test_forward_infer_without_detections():
    model = CrossVIS(tiny_spec(), num_classes=3, num_identities=4).eval()
    out = model.forward_infer(torch.rand(3, 64, 96) * 255, (120, 200), post_processing(score_threshold=1.0))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 120, 200) and out["embeddings"].shape == (0, 16)


def test_load_init_from_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = CrossVIS(tiny_spec(), num_classes=5, num_identities=7)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    torch.manual_seed(1)
    target = CrossVIS(tiny_spec(), num_classes=3, num_identities=4)
    missing, unexpected = init_model(target, path)
    assert set(missing) == {
        "head.cls_logits.weight",
        "head.cls_logits.bias",
        "identity_loss.proxies.weight",
        "identity_loss.proxies.bias",
    }
    assert unexpected == []
    assert torch.equal(target.head.controller.weight, source.head.controller.weight)
    assert torch.equal(target.features.fpn.p6.weight, source.features.fpn.p6.weight)

    plain = tmp_path / "plain.pth"
    torch.save(source.state_dict(), plain)
    assert init_model(CrossVIS(tiny_spec(), num_classes=5, num_identities=7), plain) == ([], [])
    with pytest.raises(ValueError, match="^init_from: no such file"):
        init_model(target, tmp_path / "nope.pth")


def test_single_images_share_one_normaliser_over_the_batch():
    """CondInst stage (AdelaiDet's ``fcos_losses`` / dice mean): one normaliser over all images of the batch.

    Per-frame normalisers separate frame t from t+δ of pairs; single images have one frame each, so
    the default per_frame must not split a batch [A, B] into image groups. Image A has 18 positives,
    B 9: the focal and centerness losses of [A, B] are (18·L_A + 9·L_B) / 27 of each image's own
    loss, and the dice mean weighs each image by its positives the same way (not (L_A + L_B) / 2).
    """
    torch.manual_seed(0)
    images, sizes, targets = make_batch(1)
    a, b = targets[0][0], {k: v[:1] for k, v in targets[0][1].items()}
    overrides = ("mask.max_proposals=100000", "crossover.enabled=false", "embedding.enabled=false")
    model = CrossVIS(tiny_spec(*overrides), num_classes=3, num_identities=4).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(2.0)  # negatives dominate: the normaliser decides the value
        both = model.forward_train(images[0][:, None], sizes[0][:, None], [[a], [b]])
        only_a = model.forward_train(images[0][:1, None], sizes[0][:1, None], [[a]])
        only_b = model.forward_train(images[0][1:, None], sizes[0][1:, None], [[b]])
    for name in ("loss_cls", "loss_ctr", "loss_mask"):
        expected = (18 * only_a[name].item() + 9 * only_b[name].item()) / 27
        assert both[name].item() == pytest.approx(expected, rel=1e-4), name


def test_per_frame_loss_normalisers_average_the_pair():
    """Public code: each loss over frame t (own normaliser) and over t+δ (own normaliser), averaged.

    With one normaliser over a pair (A, A) the loss is A's own per-frame loss, so per-frame
    losses of (A, B) must be the mean of the single-normaliser losses of (A, A) and (B, B).
    Eval mode keeps BatchNorm per-image; max_proposals above the positive count removes sampling.
    """
    torch.manual_seed(0)
    images, sizes, targets = make_batch(1)
    a, b = targets[0]
    b = {k: v[:1] for k, v in b.items()}  # frame B has one instance, A two: different normalisers
    per_frame = CrossVIS(tiny_spec("mask.max_proposals=100000"), num_classes=3, num_identities=4).eval()
    with torch.no_grad():
        per_frame.head.cls_logits.bias.fill_(2.0)  # negatives dominate: the normaliser decides the value
    pair = CrossVIS(tiny_spec("mask.max_proposals=100000", "loss_normalizer=pair"), num_classes=3, num_identities=4)
    pair.load_state_dict(per_frame.state_dict())
    pair.eval()
    with torch.no_grad():
        mixed = per_frame.forward_train(images, sizes, [[a, b]])
        same_a = pair.forward_train(images[:, [0, 0]], sizes, [[a, a]])
        same_b = pair.forward_train(images[:, [1, 1]], sizes, [[b, b]])
        pooled = pair.forward_train(images, sizes, [[a, b]])
    for name in ("loss_cls", "loss_box", "loss_ctr", "loss_mask"):
        assert mixed[name].item() == pytest.approx((same_a[name].item() + same_b[name].item()) / 2, rel=1e-4), name
    # 18 and 9 positives, similar sums S: per frame (S/18 + S/9)/2 = S/12, one normaliser 2S/27 = S/13.5
    assert pooled["loss_cls"].item() < 0.95 * mixed["loss_cls"].item()
    with pytest.raises(ValueError, match="^model.loss_normalizer='frame': expected one of"):
        CrossVIS(tiny_spec("loss_normalizer=frame"), num_classes=3, num_identities=4)


def test_bn_batches_per_position_normalises_key_and_reference_frames_apart():
    """Public code: the network runs on the key frames, then on the reference frames, so a train-mode
    BatchNorm normalises B frames per call and updates its running statistics twice per step.

    Oracle: a joint batch of (key, key) pairs normalises with the key frames' own batch statistics
    (a duplicated batch has the same mean and biased variance), so per position the key frames' mask
    features equal those of the joint (key, key) batch, and the mask loss of (key, ref) pairs is the
    mean of the joint mask losses of (key, key) and (ref, ref).
    """
    torch.manual_seed(0)
    images, sizes, targets = make_batch()
    overrides = ("mask.max_proposals=100000", "crossover.enabled=false")
    per_position = CrossVIS(tiny_spec(*overrides), num_classes=3, num_identities=4).train()
    joint = CrossVIS(tiny_spec(*overrides, "bn_batches=joint"), num_classes=3, num_identities=4)
    joint.load_state_dict(per_position.state_dict())
    joint.train()
    feats: list[torch.Tensor] = []
    for model in (per_position, joint):
        model.mask_branch.register_forward_hook(lambda module, args, out: feats.append(out))

    def run(model, positions):
        feats.clear()
        pairs = [[pair[i] for i in positions] for pair in targets]
        with torch.no_grad():
            losses = model.forward_train(images[:, positions], sizes, pairs)
        return losses, torch.cat(feats)

    split, split_feats = run(per_position, [0, 1])
    assert int(per_position.mask_branch.tower[0][1].num_batches_tracked) == 2  # two calls per step
    pooled, pooled_feats = run(joint, [0, 1])
    assert int(joint.mask_branch.tower[0][1].num_batches_tracked) == 1
    from_keys, key_feats = run(joint, [0, 0])
    from_refs, _ = run(joint, [1, 1])
    keys_per_position = split_feats[: len(targets)]  # first call: the key frames
    assert torch.allclose(keys_per_position, key_feats[::2], atol=1e-5)
    assert (keys_per_position - pooled_feats[::2]).abs().max() > 1e-3  # the joint batch normalises otherwise
    expected = (from_keys["loss_mask"].item() + from_refs["loss_mask"].item()) / 2
    assert split["loss_mask"].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="^model.bn_batches="):
        CrossVIS(tiny_spec("bn_batches=pairs"), num_classes=3, num_identities=4)
