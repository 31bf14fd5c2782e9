"""Online trackers: the base interface, CrossVIS's embedding tracker, the peer's mask-IoU tracker."""

from crossvis.tracking.base import Tracker
from crossvis.tracking.crossvis import OnlineTracker
from crossvis.tracking.mask_iou import MaskIoUTracker

__all__ = ["MaskIoUTracker", "OnlineTracker", "Tracker"]
