"""Convert a detectron2 / AdelaiDet CondInst or authors' CrossVIS checkpoint to this project's key names.

    python -m crossvis.cli.convert SRC DST [--num-classes N] [--num-identities M] [CONFIG_OVERRIDE ...]

SRC: ``.pth`` (``{"model": ...}`` or a bare state dict) or detectron2 ``.pkl``. DST gets every
mapped tensor (renamed only, nothing re-initialised or flipped) plus the source's origin, and
loads with ``model.init_from=DST`` exactly like SRC would. The report compares SRC with the model
it will initialise (the paper's model with the detectron2 backbone of SRC's depth, ``N`` classes
and ``M`` identities; defaults: SRC's own) and is printed as the last line, in JSON:
``{"loaded": count, "reinitialised": {key: reason}, "unmatched": [...], "unused": [...]}``.
An incomplete match (a model tensor without counterpart, a file tensor without a place) is an
error: exit 1, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys

from crossvis.checkpoint.loading import convert
from crossvis.checkpoint.released import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossvis.cli.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="detectron2/AdelaiDet/CrossVIS checkpoint (.pth or .pkl)")
    parser.add_argument("dst", help="converted checkpoint to write (.pth)")
    parser.add_argument("--num-classes", type=int, help="classes of the model to initialise (default: SRC's)")
    parser.add_argument("--num-identities", type=int, help="identities M of the model (default: SRC's)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. model.embedding.dim=256")
    args = parser.parse_args(argv)
    try:
        report = convert(args.src, args.dst, args.num_classes, args.num_identities, args.overrides)
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote {args.dst}: {report['loaded']} tensors load, {len(report['reinitialised'])} re-initialised, "
        f"{len(report['unused'])} unused"
    )
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
