"""CrossVIS: crossover learning for fast online video instance segmentation (ICCV 2021)."""

__version__ = "0.1.0"
