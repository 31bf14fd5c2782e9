"""Train CrossVIS (Hydra entry point).

python -m crossvis.cli.train data=synthetic data.root=DIR model/backbone=resnet18 trainer.max_steps=50
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossvis.cli import configure_threads, user_errors
from crossvis.engine.training import train
from crossvis.files import record_failure


@hydra.main(config_path="pkg://crossvis.conf", config_name="train", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    with record_failure(HydraConfig.get().runtime.output_dir):  # a failed sweep member says why
        configure_threads(cfg.threads, int(cfg.data.num_workers))
        train(cfg)


if __name__ == "__main__":
    main()
