"""Error analysis: hand-built cases with exactly one error type, breakdowns that reconcile with the metric."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.evaluation import analysis as A
from crossvis.evaluation.metric import evaluate

H = W = 40
F = 6


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode()}


def box(y: int, x: int, h: int = 10, w: int = 10) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def track(mask: np.ndarray | None, frames: range | list = range(F)) -> list:
    return [rle(mask) if f in frames and mask is not None else None for f in range(F)]


def ground_truth(tracks: list[tuple[int, list]], videos: dict[int, int] | None = None) -> dict:
    """Videos {id: length} (default one video 7 of F frames); tracks (category, segmentations[, video])."""
    videos = videos or {7: F}
    return {
        "videos": [{"id": v, "height": H, "width": W, "length": n} for v, n in videos.items()],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 10 + i,
                "video_id": t[2] if len(t) > 2 else 7,
                "category_id": t[0],
                "iscrowd": 0,
                "segmentations": t[1],
            }
            for i, t in enumerate(tracks)
        ],
    }


def result(segs: list, score: float, category_id: int = 1, video_id: int = 7) -> dict:
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs}


A_BOX, B_BOX = box(5, 5), box(25, 25, 8, 8)  # areas 100 and 64, apart
GT_A = (1, track(A_BOX))
GT_B = (1, track(B_BOX))
# The switch: one track follows A for frames 0-2, then B; B's own track stops at frame 2.
SWITCH = [rle(A_BOX) if f < 3 else rle(B_BOX) for f in range(F)]

CASES = {
    "classification": ([GT_A], [result(track(A_BOX), 0.9, category_id=2)]),
    "duplicate": ([GT_A, GT_B], [result(track(A_BOX), 0.9), result(track(A_BOX), 0.8), result(track(B_BOX), 0.7)]),
    # Shifted by 5 columns in every frame: spatio-temporal IoU 50 / 150 = 1/3, every frame overlaps.
    "spatial": ([GT_A], [result(track(box(5, 10)), 0.9)]),
    "temporal": ([GT_A, GT_B], [result(SWITCH, 0.9), result(track(B_BOX, range(3)), 0.8)]),
    "background": ([GT_A], [result(track(box(28, 28)), 0.95), result(track(A_BOX), 0.9)]),
    "missed": ([GT_A, GT_B], [result(track(A_BOX), 0.9)]),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_one_planted_error_its_oracle_restores_ap_and_the_others_change_nothing(kind: str) -> None:
    gts, results = CASES[kind]
    ctx = A.Indexed(ground_truth(gts), results)
    coco_eval = ctx.evaluate(ctx.dt["annotations"])
    errors = A.error_decomposition(ctx, coco_eval)
    assert errors["AP"] == pytest.approx(evaluate(ground_truth(gts), results)["AP"])
    assert errors["AP"] < 0.9
    assert errors["AP"] + errors["dAP"][kind] == pytest.approx(1.0)
    assert errors["AP"] + errors["dAP_all"] == pytest.approx(1.0)
    assert {t: v for t, v in errors["dAP"].items() if t != kind} == pytest.approx(
        {t: 0.0 for t in A.ERROR_TYPES if t != kind}
    )
    assert errors["counts"][kind] >= 1
    assert all(errors["counts"][t] == 0 for t in A.ERROR_TYPES if t != kind)


def test_switch_track_is_one_identity_switch_and_two_tracks_for_the_instance() -> None:
    gts, results = CASES["temporal"]
    stats = A.tracking_diagnostics(A.Indexed(ground_truth(gts), results))
    # A: the switch track in frames 0-2 only (coverage 1/2); B: its own track, then the switch track.
    assert stats["identity_switches"] == 1
    assert stats["fragmentations"] == 0
    assert stats["tracks_per_instance"] == pytest.approx(1.5)
    assert stats["mean_track_coverage"] == pytest.approx((0.5 + 0.5) / 2)
    assert stats["single_frame_tracks"] == 0


def test_fragmentation_and_single_frame_tracks() -> None:
    # A is found in frames 0-1 and 4-5 by one track (a gap of two frames), and in frame 3 by a one-frame track.
    results = [result(track(A_BOX, [0, 1, 4, 5]), 0.9), result(track(A_BOX, [3]), 0.8)]
    stats = A.tracking_diagnostics(A.Indexed(ground_truth([GT_A]), results))
    assert (stats["identity_switches"], stats["fragmentations"]) == (2, 1)
    assert stats["single_frame_tracks"] == 1 and stats["single_frame_share"] == pytest.approx(0.5)
    assert stats["mean_track_coverage"] == pytest.approx(4 / 6)


def test_ground_truth_association_merges_fragments_and_oracle_classes_fix_the_class() -> None:
    gt = ground_truth([GT_A, GT_B])
    # A split into two perfect pieces; B found with the wrong class.
    results = [
        result(track(A_BOX, range(3)), 0.9),
        result(track(A_BOX, range(3, 6)), 0.8),
        result(track(B_BOX), 0.7, 2),
    ]
    ctx = A.Indexed(gt, results)
    base = A.full_metrics(ctx.evaluate(ctx.dt["annotations"]))
    association = A.full_metrics(ctx.evaluate(A.ground_truth_association(ctx)))
    classes = A.full_metrics(ctx.evaluate(A.oracle_classes(ctx)))
    assert base["AP"] == pytest.approx(evaluate(gt, results)["AP"])
    both = A.Indexed(gt, [result(track(A_BOX), 0.9), result(track(B_BOX), 0.7, 1)])
    # Association: A becomes one perfect track (B keeps its wrong class); classes: B right, A still split.
    assert association["AP"] == pytest.approx(evaluate(gt, [result(track(A_BOX), 0.85), results[2]])["AP"])
    assert classes["AP"] == pytest.approx(evaluate(gt, [*results[:2], result(track(B_BOX), 0.7, 1)])["AP"])
    assert base["AP"] < association["AP"] < 1 and base["AP"] < classes["AP"] < 1
    assert A.full_metrics(both.evaluate(A.ground_truth_association(both)))["AP"] == pytest.approx(1.0)


def test_per_category_breakdown_reconciles_with_the_overall_ap() -> None:
    gt = ground_truth([GT_A, (2, track(B_BOX))])
    results = [result(track(A_BOX), 0.9), result(track(box(25, 27, 8, 8)), 0.8, 2)]  # dog: IoU 48/80 = 0.6
    ctx = A.Indexed(gt, results)
    coco_eval = ctx.evaluate(ctx.dt["annotations"])
    rows = A.per_category(ctx, coco_eval, {1: "cat", 2: "dog"})
    assert [(r["name"], r["num_gt"]) for r in rows] == [("cat", 1), ("dog", 1)]
    assert rows[0]["AP"] == pytest.approx(1.0) and rows[1]["AP"] == pytest.approx(0.3)  # .50 .. .60: 3 of 10
    assert np.mean([r["AP"] for r in rows]) == pytest.approx(evaluate(gt, results)["AP"])


def test_duration_and_video_length_breakdowns() -> None:
    videos = {7: F, 8: 2}
    short = [rle(B_BOX), None, None, None, None, None]
    gt = ground_truth([GT_A, (1, short), (1, [rle(A_BOX), rle(A_BOX)], 8)], videos)
    results = [result(track(A_BOX), 0.9), result([rle(A_BOX), None], 0.8, video_id=8)]
    ctx = A.Indexed(gt, results)
    # Durations 6, 1 and 2 frames: terciles 1.67, 3.33 floored: short <= 1 < medium <= 3 < long.
    d = A.by_duration(ctx)
    assert d["thresholds"] == [1.0, 3.0]
    bins = {r["name"]: r for r in d["bins"]}
    assert [bins[n]["num_gt"] for n in ("short", "medium", "long")] == [1, 1, 1]
    assert bins["long"]["AP"] == pytest.approx(1.0)
    # Video 8's instance is found in one of its two frames (IoU 1/2): a hit at .50 only.
    assert (bins["medium"]["AP"], bins["medium"]["AP50"]) == pytest.approx((0.1, 1.0))
    # The one-frame instance is never found; the one-frame result is a false positive above .50 (short range).
    assert bins["short"]["AP"] == pytest.approx(0.0)
    v = A.by_video_length(ctx, thresholds=[2, 4])
    rows = {r["name"]: r for r in v["bins"]}
    assert [rows[n]["num_videos"] for n in ("short", "medium", "long")] == [1, 0, 1]
    gt7 = ground_truth([GT_A, (1, short)])
    assert rows["long"]["AP"] == pytest.approx(evaluate(gt7, results[:1])["AP"])
    assert rows["medium"]["AP"] == -1
    gt8 = ground_truth([(1, [rle(A_BOX), rle(A_BOX)], 8)], {8: 2})
    assert rows["short"]["AP"] == pytest.approx(evaluate(gt8, results[1:])["AP"]) == pytest.approx(0.1)


def test_occlusion_levels_from_ground_truth_boxes() -> None:
    # A 10x10 box half covered by a 10x10 box beside it (5 columns overlap), a third instance alone.
    left, right, alone = box(5, 5), box(5, 10), box(28, 28, 6, 6)
    gt = ground_truth([(1, track(left)), (1, track(right)), (1, track(alone))])
    ctx = A.Indexed(gt, [result(track(alone), 0.9)])
    rates = A.mean_box_occlusion(ctx)
    assert [rates[10], rates[11], rates[12]] == pytest.approx([0.5, 0.5, 0.0])
    rows = {r["name"]: r for r in A.by_occlusion(ctx)["bins"]}
    assert [rows[n]["num_gt"] for n in A.OCCLUSION_NAMES] == [1, 0, 2]
    assert (rows["slight"]["AP"], rows["moderate"]["AP"], rows["heavy"]["AP"]) == pytest.approx((1.0, -1, 0.0))


def test_hota_through_trackeval_perfect_and_switched() -> None:
    from crossvis.evaluation.hota import hota_metrics

    gt = ground_truth([GT_A, GT_B])
    perfect = hota_metrics(gt, [result(track(A_BOX), 0.9), result(track(B_BOX), 0.8)])
    assert (perfect["HOTA"], perfect["DetA"], perfect["AssA"]) == pytest.approx((1.0, 1.0, 1.0))
    swapped = [rle(B_BOX) if f < 3 else rle(A_BOX) for f in range(F)]
    switched = hota_metrics(gt, [result(SWITCH, 0.9), result(swapped, 0.8)])
    assert switched["DetA"] == pytest.approx(1.0)  # every mask is right ...
    assert switched["AssA"] < 0.75  # ... the identities are not


def test_cli_writes_analysis_json_and_plots_and_ends_with_the_json(tmp_path, capsys) -> None:
    import json

    from crossvis.cli.analyze import main

    gts, results = CASES["temporal"]
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth(gts)))
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path / "gt.json"), str(tmp_path / "results.json"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    analysis = json.loads(out[-1])
    assert analysis == json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert analysis["metrics"] == pytest.approx(evaluate(ground_truth(gts), results))
    assert analysis["errors"]["dAP"]["temporal"] > 0 and "HOTA" in analysis["tracking"]["hota"]
    for name in ("errors.png", "by_length.png", "by_occlusion.png", "per_category.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_results_is_one_error_naming_the_field(tmp_path, capsys) -> None:
    import json

    from crossvis.cli.analyze import main

    (tmp_path / "gt.json").write_text(json.dumps(ground_truth([GT_A])))
    (tmp_path / "results.json").write_text(json.dumps([result(track(A_BOX)[:3], 0.9)]))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "gt.json"), str(tmp_path / "results.json")])
    assert exit_info.value.code == 1
    assert "segmentations has 3 entries, expected the video length 6" in capsys.readouterr().err
    assert not (tmp_path / "analysis.json").exists()


def test_all_cases_in_one_file_overall_metrics_equal_the_metric_and_categories_reconcile() -> None:
    videos, tracks, results = {}, [], []
    for v, (gts, res) in enumerate(CASES.values(), start=1):
        videos[v] = F
        tracks += [(c, segs, v) for c, segs in gts]
        results += [{**r, "video_id": v} for r in res]
    gt = ground_truth(tracks, videos)
    ctx = A.Indexed(gt, results)
    coco_eval = ctx.evaluate(ctx.dt["annotations"])
    assert A.full_metrics(coco_eval) == pytest.approx(evaluate(gt, results))
    rows = A.per_category(ctx, coco_eval, {1: "cat", 2: "dog"})
    assert np.mean([r["AP"] for r in rows]) == pytest.approx(evaluate(gt, results)["AP"])
    length = A.by_video_length(ctx)  # every video has F frames: one bin holds them all and equals the whole
    assert length["bins"][0]["num_videos"] == 6 and length["bins"][0]["AP"] == pytest.approx(
        evaluate(gt, results)["AP"]
    )
    assert sum(b["num_gt"] for b in A.by_duration(ctx)["bins"]) == len(tracks)


def test_ground_truth_association_drops_per_frame_duplicates_and_keeps_false_positive_tracks() -> None:
    gt = ground_truth([GT_A])
    # Y (0.95) covers A in frames 0-1, X (0.9) all of A: X's frames 0-1 are per-frame duplicates of Y's.
    x, y = result(track(A_BOX), 0.9), result(track(A_BOX, range(2)), 0.95)
    z = result(track(box(28, 28)), 0.97)  # on background: no piece of any ground truth
    ctx = A.Indexed(gt, [x, y, z])
    linked = A.ground_truth_association(ctx)
    assert sorted(d["score"] for d in linked) == pytest.approx(sorted([(2 * 0.95 + 4 * 0.9) / 6, 0.97]))
    [a_track] = [d for d in linked if d["key"][0] == "association"]
    assert a_track["segmentation"] == track(A_BOX)
    assert A.full_metrics(ctx.evaluate(linked))["AP"] == pytest.approx(evaluate(gt, [x, z])["AP"])
    assert evaluate(gt, [x, y, z])["AP"] < evaluate(gt, [x, z])["AP"]


def test_youtube_vis_2022_long_videos_are_scored_on_their_own(tmp_path, capsys) -> None:
    import json

    from crossvis.cli.analyze import main

    # Video 7 (short) is found perfectly, video 8 (long, 12 frames) not at all: AP_S 1, AP_L 0, mAP 0.5.
    gt = ground_truth([GT_A, (1, [rle(A_BOX)] * 12, 8)], {7: F, 8: 12})
    results = [result(track(A_BOX), 0.9), result([rle(box(28, 28))] * 12, 0.8, video_id=8)]
    split = A.long_video_split(A.Indexed(gt, results), [8])
    assert (split["short"]["AP"], split["long"]["AP"], split["mAP"]) == pytest.approx((1.0, 0.0, 0.5))
    assert (split["short"]["num_videos"], split["long"]["num_videos"]) == (1, 1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "gt_long.json").write_text(json.dumps({"videos": [{"id": 8}], "annotations": []}))
    args = [str(tmp_path / "gt.json"), str(tmp_path / "results.json"), "--no-hota"]
    assert main([*args, "--long-videos", str(tmp_path / "gt_long.json")]) == 0
    out = capsys.readouterr().out
    assert "YouTube-VIS 2022 (mAP = mean of the two APs: 50.0)" in out
    assert json.loads(out.strip().splitlines()[-1])["ytvis22"]["mAP"] == pytest.approx(0.5)
    (tmp_path / "gt_long.json").write_text(json.dumps({"videos": [{"id": 9}]}))
    with pytest.raises(SystemExit):
        main([*args, "--long-videos", str(tmp_path / "gt_long.json")])
    assert "gt_long.json: videos [9] are not videos of the ground truth" in capsys.readouterr().err


def test_oracle_classes_leave_results_that_match_no_ground_truth_alone() -> None:
    # A perfect cat track scores AP 1; a dog result touching it (st-IoU 1/3 < .5) keeps its class:
    # relabelled as cat, it would be a false positive ranked above the true one.
    gt = ground_truth([GT_A])
    results = [result(track(A_BOX), 0.8), result(track(box(5, 10)), 0.9, category_id=2)]
    ctx = A.Indexed(gt, results)
    assert [d["category_id"] for d in A.oracle_classes(ctx)] == [1, 2]
    assert A.full_metrics(ctx.evaluate(A.oracle_classes(ctx)))["AP"] == pytest.approx(1.0)


def test_oracles_leave_the_indexed_results_untouched() -> None:
    gts, results = CASES["temporal"]
    ctx = A.Indexed(ground_truth(gts), [result(track(box(28, 28)), 0.95), *results])
    before = [dict(d) for d in ctx.dt["annotations"]]
    A.ground_truth_association(ctx)
    A.oracle_classes(ctx)
    assert ctx.dt["annotations"] == before
