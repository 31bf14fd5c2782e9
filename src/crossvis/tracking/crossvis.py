"""Online tracking by detection: link each frame's detections to tracks as the frames arrive.

Default ("public"): the CrossVIS public code's rule. Every detection is compared with the last
detection of every track, match = cosine(embedding) + box IoU (−1 across classes); a best match
below ``match_threshold`` starts a new track, and a track accepts at most one detection per
frame, the one with the highest match (the others that chose it are dropped).

Option ``scoring="masktrack"``: the paper's inference procedure (MaskTrack R-CNN [68]): the
assignment log-probability of Eq. 9 over [new, tracks] (raw dot products of the unnormalised
embeddings, as trained by the pair-wise loss) plus weighted log detection score, box
IoU and same-category terms; the "new" slot has IoU 0 and category term 1, as in MaskTrack
R-CNN. Conflicts go to the highest comprehensive score. ``masktrack_weights`` default to
MaskTrack R-CNN's ``match_coeff`` (1.0, 2.0, 10.0) for (log score, IoU, category).

Association options of later online methods (all off by default, the public rule above):
``association="hungarian"`` (MinVIS) replaces the greedy choice by a one-to-one assignment
maximising the total match, pairs below the new-track score starting new tracks;
``momentum`` m (CTVIS) keeps each track's embedding as m · memory + (1 − m) · matched embedding
instead of the last one; ``track_score="coverage"`` multiplies a track's mean detection score by
the share of the frames it covers, so one-frame tracks stop outranking whole ones;
``reid_threshold`` c: detections are matched to the tracks seen in the previous frame first, and
a detection left to start a track re-identifies a track of its class seen before a gap when
their embedding cosine reaches c.

Memory stays bounded on long videos: per track only the last box, embedding and label are kept
as tensors, plus the compressed RLE of each frame's mask, a running score sum and label counts.
The video's length is not needed in advance (container frame counts are often wrong): frames
are consumed as they come and the results cover the frames actually seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from crossvis.rle import encode_masks
from crossvis.tracking.base import CategoryLookup, Tracker, category_of

Scoring = Literal["public", "masktrack"]
CategoryVote = Literal["first", "majority"]
Association = Literal["greedy", "hungarian"]
TrackScore = Literal["mean", "coverage"]
DETECTION_KEYS = ("boxes", "labels", "scores", "masks", "embeddings")


@dataclass
class _Track:
    """What a finished track needs: one RLE per frame where present, a score sum and label votes."""

    rles: dict[int, dict[str, Any]] = field(default_factory=dict)
    score_sum: float = 0.0
    label_votes: Counter[int] = field(default_factory=Counter)  # insertion order: first label first


class OnlineTracker(Tracker):
    """Assigns per-frame detections of one video to tracks and produces its official result entries."""

    def __init__(
        self,
        match_threshold: float = 0.4,
        scoring: Scoring = "public",
        category_vote: CategoryVote = "first",
        masktrack_weights: Sequence[float] = (1.0, 2.0, 10.0),
        association: Association = "greedy",
        momentum: float = 0.0,
        track_score: TrackScore = "mean",
        reid_threshold: float | None = None,
    ) -> None:
        if reid_threshold is not None and (
            isinstance(reid_threshold, bool) or not isinstance(reid_threshold, (int, float))
        ):
            raise ValueError(f"reid_threshold: expected null or a number (cosine), got {reid_threshold!r}")
        if association not in ("greedy", "hungarian"):
            raise ValueError(f"association: expected 'greedy' or 'hungarian', got {association!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
        if track_score not in ("mean", "coverage"):
            raise ValueError(f"track_score: expected 'mean' or 'coverage', got {track_score!r}")
        if scoring not in ("public", "masktrack"):
            raise ValueError(f"scoring: expected 'public' or 'masktrack', got {scoring!r}")
        if category_vote not in ("first", "majority"):
            raise ValueError(f"category_vote: expected 'first' or 'majority', got {category_vote!r}")
        if len(masktrack_weights) != 3:
            raise ValueError(
                f"masktrack_weights: expected 3 weights (log score, IoU, category), got {masktrack_weights!r}"
            )
        self.match_threshold = match_threshold
        self.scoring = scoring
        self.category_vote = category_vote
        self.masktrack_weights = tuple(float(w) for w in masktrack_weights)
        self.association = association
        self.momentum = float(momentum)
        self.track_score = track_score
        self.reid_threshold = reid_threshold
        self._boxes = torch.zeros((0, 4))
        self._last_seen = torch.zeros(0, dtype=torch.long)  # frame each track last took a detection
        self._labels = torch.zeros(0, dtype=torch.long)
        self._embeddings: torch.Tensor | None = None
        self._tracks: list[_Track] = []
        self._last_frame = -1

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    @property
    def num_frames(self) -> int:
        """Frames seen so far (the last updated index + 1): the length of every result's segmentations."""
        return self._last_frame + 1

    def update(self, frame_index: int, detections: Mapping[str, Any]) -> np.ndarray:
        """Link one frame's detections (tensors or arrays, see the model's ``forward_infer``) to tracks.

        Returns the track index of each detection, -1 for detections dropped because another
        detection won the same track (useful for drawing the tracks).
        """
        if frame_index <= self._last_frame:
            raise ValueError(
                f"frame_index: expected an index above the last one ({self._last_frame}), got {frame_index}"
            )
        missing = [k for k in DETECTION_KEYS if k not in detections]
        if missing:
            raise ValueError(f"detections: missing {missing} (expected keys {list(DETECTION_KEYS)})")
        boxes, scores, embeddings = (
            torch.as_tensor(detections[k]).detach().cpu().float() for k in ("boxes", "scores", "embeddings")
        )
        labels = torch.as_tensor(detections["labels"]).detach().cpu().long()
        masks = torch.as_tensor(detections["masks"]).detach().cpu().numpy()
        num_dets = len(scores)
        if masks.dtype != np.bool_ or masks.ndim != 3:
            raise ValueError(f"detections['masks']: expected bool [K, H, W], got {masks.dtype} {list(masks.shape)}")
        if not len(boxes) == len(labels) == len(embeddings) == len(masks) == num_dets:
            raise ValueError(
                "detections: boxes, labels, scores, masks and embeddings must have the same length K, got "
                f"{[len(boxes), len(labels), len(scores), len(masks), len(embeddings)]}"
            )
        self._last_frame = frame_index
        track_ids = torch.full((num_dets,), -1, dtype=torch.long)
        if num_dets == 0:
            return track_ids.numpy()

        if self._tracks:
            keep, target, is_new = self._assign(boxes, labels, scores, embeddings, frame_index)
            track_ids[keep] = target[keep]
            self._last_seen[target[keep]] = frame_index
            self._boxes[target[keep]] = boxes[keep]
            self._labels[target[keep]] = labels[keep]
            # Track memory: the last embedding (public), or a momentum average of the matched ones (CTVIS).
            old_embeddings = self._embeddings[target[keep]]
            self._embeddings[target[keep]] = self.momentum * old_embeddings + (1 - self.momentum) * embeddings[keep]
        else:
            is_new = torch.ones(num_dets, dtype=torch.bool)

        track_ids[is_new] = torch.arange(len(self._tracks), len(self._tracks) + int(is_new.sum()))
        self._tracks.extend(_Track() for _ in range(int(is_new.sum())))
        self._boxes = torch.cat([self._boxes, boxes[is_new]])
        self._labels = torch.cat([self._labels, labels[is_new]])
        self._last_seen = torch.cat([self._last_seen, torch.full((int(is_new.sum()),), frame_index)])
        old = self._embeddings if self._embeddings is not None else embeddings[:0]
        self._embeddings = torch.cat([old, embeddings[is_new]])

        assigned = (track_ids >= 0).nonzero().squeeze(1).numpy()
        for det, rle in zip(assigned.tolist(), encode_masks(masks, assigned.tolist())):
            track = self._tracks[int(track_ids[det])]
            track.rles[frame_index] = rle
            track.score_sum += float(scores[det])
            track.label_votes[int(labels[det])] += 1
        return track_ids.numpy()

    def _assign(
        self,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        scores: torch.Tensor,
        embeddings: torch.Tensor,
        frame_index: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which detections join which track (``keep``, ``target``) and which start one (``is_new``).

        With ``reid_threshold``, two stages: first the tracks seen in the previous frame; a detection
        that would start a track then re-identifies a track seen earlier (same class) by embedding
        cosine alone, if it reaches the threshold (its last box says nothing after a gap).
        """
        match, new_score = self._match_matrix(boxes, labels, scores, embeddings)
        inclusive = self.scoring == "public"  # MaskTrack's new slot wins ties (it comes first)
        if self.reid_threshold is None:
            return self._assign_matrix(match, new_score, inclusive)
        recent = self._last_seen == frame_index - 1
        keep, target, is_new = self._assign_matrix(match.masked_fill(~recent[None], -torch.inf), new_score, inclusive)
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self._embeddings, dim=1).T
        allowed = ~recent[None] & (labels[:, None] == self._labels[None, :]) & is_new[:, None]
        threshold = torch.full_like(new_score, float(self.reid_threshold))
        found, found_target, _ = self._assign_matrix(cosine.masked_fill(~allowed, -torch.inf), threshold, True)
        return keep | found, torch.where(found, found_target, target), is_new & ~found

    def _assign_matrix(
        self, match: torch.Tensor, new_score: torch.Tensor, inclusive: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """greedy (public code): each detection picks its best track, a track keeps the highest match
        among those picking it (first on ties) and the others are dropped. hungarian (MinVIS): a
        one-to-one assignment maximising the total match. Either way a match below the new-track
        score (at it, unless ``inclusive``) starts a new track."""
        num_dets = len(new_score)
        if self.association == "hungarian":
            from scipy.optimize import linear_sum_assignment

            rows, cols = (torch.as_tensor(a) for a in linear_sum_assignment(-match.clamp_min(-1e6).numpy()))
            joins = match[rows, cols] >= new_score[rows] if inclusive else match[rows, cols] > new_score[rows]
            target = torch.zeros(num_dets, dtype=torch.long)
            keep = torch.zeros(num_dets, dtype=torch.bool)
            keep[rows[joins]], target[rows[joins]] = True, cols[joins]
            return keep, target, ~keep
        best, target = match.max(dim=1)
        is_new = ~(best >= new_score if inclusive else best > new_score)
        candidates = torch.full((num_dets, match.shape[1]), -torch.inf)
        matched = (~is_new).nonzero().squeeze(1)
        candidates[matched, target[matched]] = best[matched]
        winner = candidates.argmax(dim=0)
        keep = ~is_new & (winner[target] == torch.arange(num_dets))
        return keep, target, is_new

    def _match_matrix(
        self, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Match scores [D, T] and each detection's new-track score [D] (the threshold, or MaskTrack's new slot)."""
        ious = box_iou(boxes, self._boxes).nan_to_num(0.0)  # degenerate boxes: 0/0
        same_class = labels[:, None] == self._labels[None, :]
        if self.scoring == "public":
            cosine = F.normalize(embeddings, dim=1) @ F.normalize(self._embeddings, dim=1).T
            match = torch.where(same_class, cosine + ious, torch.tensor(-1.0))
            return match, torch.full((len(scores),), float(self.match_threshold))
        comprehensive = self._comprehensive(ious, same_class, scores, embeddings)
        return comprehensive[:, 1:], comprehensive[:, 0]

    def _comprehensive(
        self, ious: torch.Tensor, same_class: torch.Tensor, scores: torch.Tensor, embeddings: torch.Tensor
    ) -> torch.Tensor:
        """MaskTrack R-CNN's comprehensive score over [new, tracks]."""
        w_score, w_iou, w_category = self.masktrack_weights
        # Eq. 9: softmax over [new identity (logit 0), tracks] of raw dot products of the unnormalised
        # embeddings (the model returns them unnormalised), as MaskTrack R-CNN's inference does.
        log_prob = torch.log_softmax(F.pad(embeddings @ self._embeddings.T, (1, 0)), dim=1)
        return (
            log_prob
            + w_score * scores.clamp_min(1e-12).log()[:, None]
            + w_iou * F.pad(ious, (1, 0))
            + w_category * F.pad(same_class.float(), (1, 0), value=1.0)
        )

    def _score(self, track: _Track) -> float:
        """mean: the mean detection score (public); coverage: times the share of the frames seen that
        the track covers, so that a one-frame track does not outrank a whole one."""
        mean = track.score_sum / len(track.rles)
        return mean if self.track_score == "mean" else mean * len(track.rles) / self.num_frames

    def video_results(self, video_id: int, label_to_category_id: CategoryLookup) -> list[dict]:
        """Official result entries, one per track: mean detection score, voted category, RLE or None per frame seen."""
        to_category = category_of(label_to_category_id)
        results = []
        for track in self._tracks:
            votes = track.label_votes
            label = next(iter(votes)) if self.category_vote == "first" else votes.most_common(1)[0][0]
            results.append(
                {
                    "video_id": int(video_id),
                    "category_id": int(to_category(label)),
                    "score": self._score(track),
                    "segmentations": [track.rles.get(f) for f in range(self.num_frames)],
                }
            )
        return results
