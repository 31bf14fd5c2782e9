"""The Hydra configs, packaged with the library (``pkg://crossvis.conf``)."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
