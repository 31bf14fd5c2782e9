"""Every tensor of an AdelaiDet CondInst R-50 checkpoint (and the CrossVIS fork's extras), name → shape.

Written from the published module layouts, not from this project's code: detectron2 ``resnet.py``
(``BasicStem``: ``stem.conv1`` 7×7 + FrozenBN; ``BottleneckBlock``: ``conv1`` 1×1, ``conv2`` 3×3,
``conv3`` 1×1, ``shortcut`` on the first block of each stage, each conv with ``.norm``; FrozenBN holds
weight, bias, running_mean, running_var; R-50 = res2..res5 with 3, 4, 6, 3 blocks, bottleneck
widths 64..512, outputs 256..2048), detectron2 ``fpn.py`` (``fpn_lateral{3,4,5}`` 1×1 and
``fpn_output{3,4,5}`` 3×3 with bias) with AdelaiDet's ``LastLevelP6P7`` (``top_block.p6``/``p7``),
AdelaiDet ``fcos.py`` (``cls_tower``/``bbox_tower`` = 4 × [conv, GroupNorm(32), ReLU] → tensors at
0,1,3,4,6,7,9,10; ``cls_logits``, ``bbox_pred``, ``ctrness`` 3×3; ``scales.{0..4}.scale`` [1]),
``condinst.py`` (``controller`` 3×3 256→169), ``mask_branch.py`` (``refine.{0,1,2}`` and
``tower.{0..3}`` = [conv 3×3 no bias, BatchNorm], ``tower.4`` 1×1 128→8) and
``dynamic_mask_head.py`` (buffers ``sizes_of_interest`` [5], ``_iter`` [1]). The CrossVIS fork adds
``fcos_head.reid_tower`` (like ``cls_tower``), ``reid_pred`` 1×1 256→256, ``reid_pred_bn``
BatchNorm2d(256) and ``cls`` Linear(256, 3774).
"""

from __future__ import annotations

R50_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}
R101_BLOCKS = {2: 3, 3: 4, 4: 23, 5: 3}
FROZEN_BN = ("weight", "bias", "running_mean", "running_var")
BN = (*FROZEN_BN, "num_batches_tracked")


def _conv_norm(name: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """detectron2 ``Conv2d`` (no bias) with its FrozenBN under ``.norm``."""
    return {f"{name}.weight": shape, **{f"{name}.norm.{p}": (shape[0],) for p in FROZEN_BN}}


def resnet_keys(blocks: dict[int, int]) -> dict[str, tuple[int, ...]]:
    keys = _conv_norm("backbone.bottom_up.stem.conv1", (64, 3, 7, 7))
    in_channels = 64
    for stage, count in blocks.items():
        width, out = 64 * 2 ** (stage - 2), 256 * 2 ** (stage - 2)
        for i in range(count):
            prefix = f"backbone.bottom_up.res{stage}.{i}"
            if i == 0:
                keys.update(_conv_norm(f"{prefix}.shortcut", (out, in_channels, 1, 1)))
            keys.update(_conv_norm(f"{prefix}.conv1", (width, in_channels if i == 0 else out, 1, 1)))
            keys.update(_conv_norm(f"{prefix}.conv2", (width, width, 3, 3)))
            keys.update(_conv_norm(f"{prefix}.conv3", (out, width, 1, 1)))
        in_channels = out
    return keys


def _gn_tower(prefix: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for i in (0, 3, 6, 9):
        keys.update({f"{prefix}.{i}.weight": (256, 256, 3, 3), f"{prefix}.{i}.bias": (256,)})
        keys.update({f"{prefix}.{i + 1}.weight": (256,), f"{prefix}.{i + 1}.bias": (256,)})
    return keys


def _bn_conv(prefix: str, in_channels: int) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}.0.weight": (128, in_channels, 3, 3)}
    keys.update({f"{prefix}.1.{p}": (() if p == "num_batches_tracked" else (128,)) for p in BN})
    return keys


def condinst_keys(num_classes: int = 80, blocks: dict[int, int] = R50_BLOCKS) -> dict[str, tuple[int, ...]]:
    """AdelaiDet CondInst (MS R-50 1x by default) state dict: name → shape."""
    keys = resnet_keys(blocks)
    for level, c in ((3, 512), (4, 1024), (5, 2048)):
        keys.update(
            {f"backbone.fpn_lateral{level}.weight": (256, c, 1, 1), f"backbone.fpn_lateral{level}.bias": (256,)}
        )
        keys.update(
            {f"backbone.fpn_output{level}.weight": (256, 256, 3, 3), f"backbone.fpn_output{level}.bias": (256,)}
        )
    for p in ("p6", "p7"):
        keys.update({f"backbone.top_block.{p}.weight": (256, 256, 3, 3), f"backbone.top_block.{p}.bias": (256,)})
    head = "proposal_generator.fcos_head"
    keys.update(_gn_tower(f"{head}.cls_tower"))
    keys.update(_gn_tower(f"{head}.bbox_tower"))
    keys.update({f"{head}.cls_logits.weight": (num_classes, 256, 3, 3), f"{head}.cls_logits.bias": (num_classes,)})
    keys.update({f"{head}.bbox_pred.weight": (4, 256, 3, 3), f"{head}.bbox_pred.bias": (4,)})
    keys.update({f"{head}.ctrness.weight": (1, 256, 3, 3), f"{head}.ctrness.bias": (1,)})
    keys.update({f"{head}.scales.{i}.scale": (1,) for i in range(5)})
    keys.update({"controller.weight": (169, 256, 3, 3), "controller.bias": (169,)})
    for i in range(3):
        keys.update(_bn_conv(f"mask_branch.refine.{i}", 256))
    for i in range(4):
        keys.update(_bn_conv(f"mask_branch.tower.{i}", 128))
    keys.update({"mask_branch.tower.4.weight": (8, 128, 1, 1), "mask_branch.tower.4.bias": (8,)})
    keys.update({"mask_head.sizes_of_interest": (5,), "mask_head._iter": (1,)})
    return keys


def crossvis_extras(num_identities: int = 3774) -> dict[str, tuple[int, ...]]:
    """Keys the authors' CrossVIS checkpoints add to CondInst's."""
    head = "proposal_generator.fcos_head"
    keys = _gn_tower(f"{head}.reid_tower")
    keys.update({f"{head}.reid_pred.weight": (256, 256, 1, 1), f"{head}.reid_pred.bias": (256,)})
    keys.update({f"{head}.reid_pred_bn.{p}": (() if p == "num_batches_tracked" else (256,)) for p in BN})
    keys.update({"cls.weight": (num_identities, 256), "cls.bias": (num_identities,)})
    return keys
