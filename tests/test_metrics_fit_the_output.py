"""Metrics that fit the output: top-1 agreement per position on [N, T, C] outputs,
sequence agreement after CTC decoding, IoU and Dice on maps — each against values
worked out by hand in the comments."""

import numpy as np
import pytest

from edgec import metrics
from edgec.diagnostics import UsageError
from edgec.metrics import (cannot_discriminate, ctc_collapse, evaluate, format_value,
                           higher_is_better, parse_metric, predictions)


def _logits(classes, count=3):
    """[N, T, C] logits whose argmax per position is ``classes`` ([N, T])."""
    return (np.eye(count, dtype=np.float32)[np.asarray(classes)] * 5.0) - 1.0


# Per position (blank 0):     ref              cand             decoded ref / cand
#   sample 0            [1, 1, 0, 2]     [1, 1, 1, 2]      (1, 2) / (1, 2)  3 of 4 agree
#   sample 1            [0, 2, 2, 0]     [0, 2, 0, 0]      (2,)   / (2,)    3 of 4 agree
REF = [_logits([[1, 1, 0, 2], [0, 2, 2, 0]])]
CAND = [_logits([[1, 1, 1, 2], [0, 2, 0, 0]])]


def test_top1_agreement_is_per_position_on_sequence_outputs():
    r = evaluate("top1-agreement", "1%", REF, CAND)
    assert r.value == pytest.approx(6 / 8)  # 6 of 8 positions
    assert r.figures["per_position"] == pytest.approx(0.75)
    assert r.figures["per_sample"] == 0.0  # neither sample agrees at every position
    assert (r.figures["samples"], r.figures["positions"]) == (2, 4)
    assert r.held is False
    assert evaluate("top1-agreement", "25%", REF, CAND).held is True
    assert "75.00 % of 2 x 4 positions agree" in r.detail
    assert "per sample, every position: 0.00 %" in r.detail
    # The old reading (one argmax over the whole flattened sample) is not what is scored.
    assert r.to_json()["figures"]["per_sample"] == 0.0


def test_top1_agreement_on_a_plain_classifier_is_unchanged():
    ref = [np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]], np.float32)]
    cand = [np.array([[1.0, 1.9, 0.0], [0.0, 0.5, 1.0]], np.float32)]
    r = evaluate("top1-agreement", "50%", ref, cand)
    assert (r.value, r.held, r.figures) == (0.5, True, {})
    # Size-1 axes are not positions: [N, 1, C] and [N, C, 1, 1] score as [N, C].
    assert evaluate("top1-agreement", "1%", [ref[0][:, None]], [cand[0][:, None]]).value == 0.5
    assert evaluate("top1-agreement", "1%", [ref[0][..., None, None]],
                    [cand[0][..., None, None]]).value == 0.5


def test_integer_outputs_are_classes_already():
    ref = [np.array([[3, 3, 0], [1, 0, 0]], np.int64)]
    cand = [np.array([[3, 0, 0], [1, 0, 0]], np.int64)]
    assert evaluate("top1-agreement", "1%", ref, cand).value == pytest.approx(5 / 6)
    # ref decodes (3,), (1,); cand (3,), (1,): equal
    assert evaluate("sequence-agreement", "1%", ref, cand).value == 1.0


def test_sequence_agreement_after_ctc_collapse():
    r = evaluate("sequence-agreement", "1%", REF, CAND)
    assert r.value == 1.0 and r.held is True  # both samples decode to the same sequence
    assert r.figures["per_position"] == pytest.approx(0.75) and r.figures["blank"] == 0
    assert "100.00 % of 2 sequences agree with fp32 after CTC decoding (blank 0" in r.detail
    # With class 2 as the blank:  ref 0 -> (1, 0), cand 0 -> (1,): differ;
    #                             ref 1 -> (0, 0), cand 1 -> (0, 0): equal.
    r2 = evaluate("sequence-agreement blank 2", "1%", REF, CAND)
    assert r2.value == 0.5 and r2.held is False and r2.metric == "sequence-agreement blank 2"


def test_ctc_collapse():
    assert ctc_collapse([0, 3, 3, 0, 3, 5, 5]) == (3, 3, 5)  # repeats merged, then blanks dropped
    assert ctc_collapse([1, 1, 1], blank=1) == ()
    assert ctc_collapse([], 0) == ()


def test_predictions_shapes():
    assert predictions(np.zeros((5, 7, 3))).shape == (5, 7)
    assert predictions(np.zeros((5, 1, 3))).shape == (5, 1)
    assert predictions(np.zeros((5, 3))).shape == (5, 1)
    assert predictions(np.zeros((5, 2, 4, 3))).shape == (5, 8)
    # One logit per sample: one class, as before (and cannot_discriminate flags it).
    assert predictions(np.ones((5, 1, 1), np.float32)).tolist() == [[0]] * 5
    assert "predicts class 0 for all 5" in cannot_discriminate(
        "top1-agreement", [np.random.default_rng(0).normal(size=(5, 1, 1))])


# Maps (threshold 0.5):  sample 0: ref {0, 2}, cand {0, 1}: IoU 1/3, Dice 2*1/(2+2) = 0.5
#                        sample 1: both empty: 1 and 1
MAP_REF = [np.array([[[0.9, 0.2], [0.6, 0.1]], [[0.1, 0.1], [0.1, 0.1]]], np.float32)[:, None]]
MAP_CAND = [np.array([[[0.8, 0.7], [0.4, 0.1]], [[0.2, 0.2], [0.2, 0.2]]], np.float32)[:, None]]


def test_iou_and_dice_at_a_threshold():
    iou = evaluate("iou", "1%", MAP_REF, MAP_CAND)
    assert iou.value == pytest.approx((1 / 3 + 1) / 2)
    assert iou.figures["pooled"] == pytest.approx(1 / 3)  # 1 pixel in common of 3 in either
    assert iou.figures["lowest_sample"] == pytest.approx(1 / 3)
    assert iou.held is False and evaluate("iou", "40%", MAP_REF, MAP_CAND).held is True
    dice = evaluate("dice", "1%", MAP_REF, MAP_CAND)
    assert dice.value == pytest.approx((0.5 + 1) / 2)
    assert dice.figures["pooled"] == pytest.approx(0.5)
    # Threshold 0.15: sample 0 ref {0, 1, 2} = cand {0, 1, 2}: 1; sample 1 ref empty,
    # cand all four: 0.
    low = evaluate("iou threshold 0.15", "1%", MAP_REF, MAP_CAND)
    assert low.value == pytest.approx(0.5) and low.figures["threshold"] == 0.15
    assert "threshold 0.15" in low.detail
    assert evaluate("dice", "0%", MAP_REF, MAP_REF).value == 1.0


def test_metric_text_and_its_errors():
    assert parse_metric("sequence-agreement") == ("sequence-agreement", {"blank": 0})
    assert parse_metric("sequence-agreement blank 3") == ("sequence-agreement", {"blank": 3})
    assert parse_metric("iou threshold 0.3") == ("iou", {"threshold": 0.3})
    assert parse_metric("sqnr") == ("sqnr", {})
    for bad, words in [("iou blank 0", "has no option 'blank' (it takes: threshold)"),
                       ("sqnr threshold 1", "has no option 'threshold' (it takes: no options)"),
                       ("iou threshold", "options are 'key value' pairs"),
                       ("iou threshold high", "is a number, not 'high'"),
                       ("sequence-agreement blank 1.5", "blank is a class index")]:
        with pytest.raises(UsageError) as error:
            parse_metric(bad)
        assert words in error.value.diagnostics[0].message, bad


def test_directions_and_units_of_the_new_metrics():
    for name in ("sequence-agreement", "iou threshold 0.3", "dice"):
        assert higher_is_better(name)
    assert format_value("sequence-agreement blank 0", 0.95) == "95.00 %"
    assert format_value("iou", 2 / 3) == "0.6667"


def test_cannot_discriminate_the_new_metrics():
    # Every position of every sample is class 0: per-position agreement measures nothing.
    flat = [_logits(np.zeros((3, 4), int))]
    assert "at every position of all 3 samples" in cannot_discriminate("top1-agreement", flat)
    assert cannot_discriminate("top1-agreement", REF) is None
    # All blank: every sample decodes to the empty sequence.
    assert "empty sequence" in cannot_discriminate("sequence-agreement", flat)
    assert cannot_discriminate("sequence-agreement", REF) is None
    # ... but with blank 1 they decode to (0,) each: still one sequence for all.
    assert "the same sequence [0]" in cannot_discriminate("sequence-agreement blank 1", flat)
    # A map below the threshold everywhere, then one that changes across it.
    empty = [np.full((2, 1, 2, 2), 0.1, np.float32)]
    message = cannot_discriminate("iou", empty)
    assert "below the threshold 0.5 everywhere on all 2 samples" in message
    assert "above" in cannot_discriminate("dice threshold 0.05", empty)
    assert cannot_discriminate("iou", MAP_REF) is None


def test_plugin_metrics_keep_working(monkeypatch):
    def mean_gap(reference, candidate, labels):
        return float(np.mean(np.abs(reference[0] - candidate[0])))
    mean_gap.higher_is_better = False
    monkeypatch.setattr(metrics, "_plugins", {"mean-gap": mean_gap})
    r = evaluate("mean-gap", 0.5, [np.zeros((2, 2))], [np.ones((2, 2))])
    assert (r.value, r.reference_value, r.held) == (1.0, 0.0, False)
    assert not higher_is_better("mean-gap")
    with pytest.raises(UsageError, match="has no option 'threshold'"):
        evaluate("mean-gap threshold 1", 0.5, [np.zeros((2, 2))], [np.ones((2, 2))])


def test_sequence_agreement_is_what_ctc_decoding_reads():
    """On noisy [N, T, C] logits: the score is the share of samples whose greedy CTC
    decodings are equal, recomputed here by hand; per position beside it."""
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (32, 20, 6)).astype(np.float32)
    noisy = ref + rng.normal(0, 0.3, ref.shape).astype(np.float32)
    result = evaluate("sequence-agreement", "1%", [ref], [noisy])
    by_hand = np.mean([ctc_collapse(a.argmax(-1)) == ctc_collapse(b.argmax(-1))
                       for a, b in zip(ref, noisy)])
    assert 0 < by_hand < 1 and result.value == pytest.approx(by_hand)
    assert result.figures["per_position"] == pytest.approx(np.mean(ref.argmax(-1) == noisy.argmax(-1)))
