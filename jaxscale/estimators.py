"""Estimators of repeated-sampling accuracy from n samples per problem, and the token edit
distance.

* pass@k (Chen et al. 2021): the chance that a size-k subset of the n samples, drawn without
  replacement, holds a correct one, 1 - C(n-c, k)/C(n, k), in the stable product form
  1 - Π_{i=n-c+1}^{n} (1 - k/i).
* maj@k: the chance that the majority answer of such a subset is the correct one, from the
  problem's answer histogram, exactly (no Monte Carlo). Unparsable samples cast no vote; ties
  between the most common answers are broken uniformly at random; a subset with no parsable
  sample is wrong.

Example:
    >>> round(pass_at_k(10, 3, 1), 3), round(pass_at_k(10, 3, 5), 3)
    (0.3, 0.917)
    >>> maj_at_k({"5": 2, "6": 1}, "5", 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from math import comb

import numpy as np

NULL = "null"  # the histogram's key of unparsable samples


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of a problem with c correct of n samples (k <= n).

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - Π_{i=n-c+1}^{n} (1 - k/i), 1 when n - c < k.

    Example:
      >>> pass_at_k(4, 1, 2)
      0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def maj_at_k(histogram: Mapping[str, int], answer: str, k: int) -> float:
    """Exact maj@k of one problem: the expected accuracy of a majority vote over a uniformly
    random size-k subset (without replacement) of its n = Σ histogram samples.

    With c samples of the correct ``answer``, groups m_g of each wrong parsed answer and u
    unparsable ones, the correct answer wins a subset holding j of its samples when every wrong
    answer has fewer than j there, and wins a tie with t others at j with chance 1/(t + 1):

      maj@k = Σ_j C(c, j) Σ_t W(k - j, t; j) / (t + 1) / C(n, k),

    W(s, t; j) counting the ways to draw s of the other samples with every wrong answer at most
    j times and exactly t of them j times (a polynomial product over the groups).

    Example:
      >>> maj_at_k({"1": 1, "2": 1}, "1", 2)
      0.5
    """
    return maj_at_ks(histogram, answer, [k])[k]


def maj_at_ks(histogram: Mapping[str, int], answer: str, ks: list[int]) -> dict[int, float]:
    """``maj_at_k`` for several k at once (one polynomial product per j serves every k).

    Counts are float64, exact while C(n, n/2) < 2^53 (n <= 54).

    Example:
      >>> maj_at_ks({"1": 2, "2": 1, "null": 1}, "1", [1, 4])
      {1: 0.5, 4: 1.0}
    """
    n = sum(histogram.values())
    if any(not 1 <= k <= n for k in ks):
        raise ValueError(f"maj@k needs 1 <= k <= n = {n}, got k={list(ks)}")
    c = histogram.get(answer, 0)
    wrong = [m for a, m in histogram.items() if a not in (answer, NULL) and m > 0]
    u_ways = np.array([comb(histogram.get(NULL, 0), x) for x in range(n + 1)], np.float64)
    wins = dict.fromkeys(ks, 0.0)
    for j in range(1, min(c, max(ks)) + 1):
        # ways[s, t]: s samples drawn from the wrong groups, each at most j, t of them at j
        ways = np.zeros((n + 1, len(wrong) + 1))
        ways[0, 0] = 1.0
        for m in wrong:
            nxt = np.zeros_like(ways)
            for x in range(min(m, j) + 1):
                tie = int(x == j)
                nxt[x:, tie:] += ways[: n + 1 - x, : ways.shape[1] - tie] * comb(m, x)
            ways = nxt
        shares = ways @ (1.0 / np.arange(1, ways.shape[1] + 1))  # Σ_t W(s, t) / (t + 1)
        for k in ks:
            if j <= k:
                s = k - j  # the unparsable samples fill what the wrong answers leave
                draws = float(np.dot(shares[: s + 1], u_ways[s::-1]))
                wins[k] += comb(c, j) * draws
    return {k: wins[k] / comb(n, k) for k in ks}


def edit_distance(a: list[int] | str, b: list[int] | str) -> int:
    """Levenshtein distance: the fewest token insertions, deletions and substitutions a -> b.

    Example:
      >>> edit_distance("1234", "1324")
      2
    """
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
