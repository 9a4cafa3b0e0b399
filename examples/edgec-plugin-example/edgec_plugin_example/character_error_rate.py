"""character-error-rate: how far a recognizer's decoded text drifts from the fp32 model's.

    CER = sum over samples of edit_distance(decoded(candidate), decoded(fp32))
          / sum over samples of len(decoded(fp32))

Both outputs ([N, T, C] logits, class 0 the CTC blank) are decoded as CTC decodes them
(`edgec.metrics.predictions` and `ctc_collapse`). Lower is better, so the metric says
so with ``higher_is_better = False``; a spec gives its tolerance as the rise allowed
(``metric character-error-rate`` / ``tolerance 0.02``).
"""

from __future__ import annotations

import numpy as np

from edgec.metrics import ctc_collapse, predictions


def edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each 1."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def character_error_rate(reference: list[np.ndarray], candidate: list[np.ndarray],
                         labels: np.ndarray | None) -> float:
    ref = [ctc_collapse(row) for row in predictions(reference[0])]
    cand = [ctc_collapse(row) for row in predictions(candidate[0])]
    errors = sum(edit_distance(c, r) for r, c in zip(ref, cand))
    length = sum(len(r) for r in ref)
    return errors / length if length else float(errors > 0)


character_error_rate.higher_is_better = False
