"""Finding the bias without group labels: the algorithm behind suspected groups (docs/DISCOVERY.md).

An evaluation set with labels only (no ``attribute`` column) shows per-class accuracy and nothing
else. This module looks for the groups a model fails on by itself:

1. **Embed** every image with the model's own layers (:mod:`core.engine.group_features`: every stage's
   channel statistics and the penultimate features). Each depth is weighted the same.
2. **Cluster** within each class (k-means++ for a few small k) and across classes (one clustering
   of all images, intersected with each class, so a shortcut that cuts through several classes,
   like the demo's corner tag, is found as the same region in each of them). Every cluster is a
   candidate group of one class.
3. **Rank** the candidates of a class by how much worse the model does there than on the part of
   the class it serves best (its best sizeable cluster), using the *lower* Wilson bound of the
   cluster's error rate, so that three wrong images never outrank sixty images of which eighty
   percent are wrong. (Against "the rest of the class" a second failing group in the same class
   would hide the first: on the photo suite, recovery fell from 100 % to 42 % that way.)
   Near-duplicates are dropped and the best ``top_k`` per class are kept.

:func:`suggest` ranks pool images (no labels) that fall in a suspected group and that the model
probably gets wrong, for the counterexample gallery; :func:`representatives` picks the images a
group is shown by.

Where else groups are found: the workbench's service (saved discoveries, naming a group) is
:mod:`core.app.suspected_groups` and :mod:`core.app.naming`, run by the task worker
(:mod:`core.app.compute`); how well the groups match planted ones, and the ``python -m core discover``
command, are :mod:`core.bench.group_recovery`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from core.engine.group_features import embed, embed_with_blocks
from core.errors import UserError
from core.formats.datasets import ImageDataset

DEFAULT_TOP_K = 3
# k-means cluster counts tried within each class, and across all classes. Measured on both suites
# (docs in the module's report): adding k=3 or k=6 here lets half-clusters of one planted group
# outrank the whole group, so recovery is sensitive to this choice.
CLASS_KS = (2, 4)
CROSS_KS = (2,)
PCA_DIMS = 16
MIN_SIZE = 5  # a candidate needs at least this many images
MAX_SHARE = 0.8  # and at most this share of its class
REFERENCE_SHARE = 0.15  # the reference part of a class: its best cluster of at least this share
MIN_SCORE = 0.02  # and must be at least two points worse than the reference part
MAX_OVERLAP = 0.5  # a group may share at most this much of the smaller one with a better group
Z = 1.96  # 95 % Wilson interval


# -- clustering ---------------------------------------------------------------------------------
def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Project centred rows onto their top principal directions (deterministic signs)."""
    xc = x - x.mean(axis=0, keepdims=True)
    if len(x) < 2:
        return xc[:, :0]
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:dims]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return xc @ (vt * signs[:, None]).T


def balance_blocks(x: np.ndarray, blocks: tuple[int, ...] | None) -> np.ndarray:
    """Centre each block of columns and scale it to a mean squared row norm of one."""
    widths = tuple(blocks) if blocks else (x.shape[1],)
    if sum(widths) != x.shape[1]:
        raise ValueError(f"feature blocks {widths} do not add up to {x.shape[1]} columns")
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    out, start = [], 0
    for w in widths:
        b = x[:, start : start + w] - x[:, start : start + w].mean(axis=0, keepdims=True)
        out.append(b / (math.sqrt(float((b * b).sum(axis=1).mean())) + 1e-12))
        start += w
    return np.concatenate(out, axis=1)


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, iters: int = 50) -> np.ndarray:
    """Seeded k-means++ (best of ``n_init`` by inertia); returns cluster ids ``[N]``."""
    n = len(x)
    if k <= 1 or n <= k:
        return np.zeros(n, dtype=np.int64) if k <= 1 else np.arange(n) % max(k, 1)
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    sq = (x * x).sum(axis=1)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = [x[rng.integers(n)]]
        d2 = ((x - centres[0]) ** 2).sum(axis=1)
        for _ in range(1, k):
            total = d2.sum()
            pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
            centres.append(x[pick])
            d2 = np.minimum(d2, ((x - x[pick]) ** 2).sum(axis=1))
        c = np.stack(centres)
        assign = np.zeros(n, dtype=np.int64)
        for it in range(iters):
            dist = sq[:, None] - 2 * x @ c.T + (c * c).sum(axis=1)[None, :]
            new = dist.argmin(axis=1)
            if it and np.array_equal(new, assign):
                break
            assign = new
            for j in range(k):
                m = assign == j
                if m.any():
                    c[j] = x[m].mean(axis=0)
        inertia = float(np.take_along_axis(dist, assign[:, None], 1).sum())
        if inertia < best_inertia - 1e-9:
            best, best_inertia = assign.copy(), inertia
    return best


# -- scoring ------------------------------------------------------------------------------------
def wilson(k: float, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class SuspectedGroup:
    """A cluster of one class where the model does worse than on the rest of that class.

    ``members`` index the analysed dataset (sorted). ``accuracy`` is the model's accuracy on the
    group, ``class_accuracy`` on the whole class, ``rest_accuracy`` on the class minus the group,
    ``reference_accuracy`` on the part of the class it serves best (see :func:`find_groups`).
    ``error_low``/``error_high``: the 95 % Wilson interval of the group's error rate. ``score`` =
    ``error_low`` − (1 − ``reference_accuracy``): how much worse, at least, the model does here.
    ``confidence_gap`` = mean probability of the true class on the rest of the class minus on the
    group. ``rank`` is 1 for the best group of a label; ``id`` is unique over all groups.
    """

    id: int
    label: int
    label_name: str
    members: np.ndarray
    size: int
    accuracy: float
    class_accuracy: float
    rest_accuracy: float
    reference_accuracy: float
    error_low: float
    error_high: float
    confidence_gap: float
    score: float
    rank: int = 0
    source: str = "class"  # "class": clustered within the class; "shared": a cross-class cluster
    sentence: str = ""

    @property
    def interval(self) -> tuple[float, float]:
        """95 % interval of the group's accuracy (1 − the error interval)."""
        return 1.0 - self.error_high, 1.0 - self.error_low

    def to_row(self) -> dict:
        return {
            "group": self.id,
            "label": self.label_name,
            "size": self.size,
            "accuracy": round(self.accuracy, 4),
            "class_accuracy": round(self.class_accuracy, 4),
            "score": round(self.score, 4),
            "rank": self.rank,
            "reference_accuracy": round(self.reference_accuracy, 4),
            "accuracy_low": round(1 - self.error_high, 4),
            "accuracy_high": round(1 - self.error_low, 4),
            "confidence_gap": round(self.confidence_gap, 4),
            "source": self.source,
            "sentence": self.sentence,
        }


@dataclass
class Discovery:
    """What :func:`analyse` found: the groups plus the per-image arrays :func:`suggest` needs."""

    groups: list[SuspectedGroup]
    features: np.ndarray  # [N, D] penultimate features of the analysed images
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    class_names: list[str] = field(default_factory=list)


def _sentence(g: SuspectedGroup) -> str:
    return (
        f"The model gets {g.accuracy:.0%} of these {g.size} '{g.label_name}' images right (at most "
        f"{1 - g.error_low:.0%} with 95% confidence), against {g.reference_accuracy:.0%} on the '{g.label_name}' "
        f"images it handles best and {g.class_accuracy:.0%} on all of them: they look alike to the model, "
        "so something they share may be what it gets wrong."
    )


def _candidate(members: np.ndarray, cls_idx: np.ndarray, correct: np.ndarray, p_true: np.ndarray) -> dict:
    in_g = np.isin(cls_idx, members)
    size = int(in_g.sum())
    err_g = int((~correct[cls_idx][in_g]).sum())
    rest = ~in_g
    lo, hi = wilson(err_g, size)
    return {
        "members": np.sort(members),
        "error": err_g / size,
        "error_low": lo,
        "error_high": hi,
        "rest_accuracy": float(correct[cls_idx][rest].mean()) if rest.any() else float("nan"),
        "confidence_gap": float(p_true[cls_idx][rest].mean() - p_true[cls_idx][in_g].mean()) if rest.any() else 0.0,
    }


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the smaller group that is also in the other one."""
    return len(np.intersect1d(a, b, assume_unique=True)) / min(len(a), len(b))


def _select(cands: list[dict], top_k: int) -> list[dict]:
    """Best first (``cands`` is sorted), skipping a candidate that shares more than
    :data:`MAX_OVERLAP` of the smaller group with a kept one; at most ``top_k``.

    An earlier version then replaced two kept groups by one coarser candidate covering both when
    their error rates were not clearly different ("a group split in halves is reported whole").
    With features from every depth that step merged *distinct* failing cells (two colour casts of
    one class, each failing as often) and cost ResNet-18 recovery (10 of 12 cells instead of 12),
    while it changed nothing on the other suites; it was removed (docs/DISCOVERY.md)."""
    kept: list[dict] = []
    for cand in cands:
        if len(kept) >= top_k:
            break
        if any(_overlap(cand["members"], k["members"]) > MAX_OVERLAP for k in kept):
            continue
        kept.append(cand)
    return kept


def _class_clusters(z: np.ndarray, labels: np.ndarray, n_classes: int, seed: int, cross_class: bool):
    """Every cluster of every clustering, as (class, member indices, source)."""
    out: list[tuple[int, np.ndarray, str]] = []
    if cross_class:
        for k in CROSS_KS:
            assign = kmeans(z, k, seed=seed + k)
            for j in range(k):
                for c in range(n_classes):
                    out.append((c, np.flatnonzero((assign == j) & (labels == c)), "shared"))
    for c in range(n_classes):
        cls_idx = np.flatnonzero(labels == c)
        if len(cls_idx) < 2 * MIN_SIZE:
            continue
        zc = pca(z[cls_idx], PCA_DIMS)
        for k in CLASS_KS:
            assign = kmeans(zc, k, seed=seed + 1000 * c + k)
            for j in range(k):
                out.append((c, cls_idx[assign == j], "class"))
    return out


def find_groups(
    features: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str] | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    cross_class: bool = True,
    blocks: tuple[int, ...] | None = None,
) -> list[SuspectedGroup]:
    """Suspected groups from arrays: features ``[N,D]``, true labels ``[N]``, probabilities ``[N,C]``.

    Candidates are the clusters of k-means (k in :data:`CLASS_KS`) within each class and of
    k-means across all images (k in :data:`CROSS_KS`) cut by class. A class's *reference* is the
    lowest error rate among its clusters holding at least :data:`REFERENCE_SHARE` of it (the part
    of the class the model serves best; the whole class if none). A candidate's score is the lower
    95 % Wilson bound of its error rate minus the reference error rate, so a handful of wrong
    images cannot outrank a large group that is clearly worse. Candidates are taken best first,
    skipping any that shares more than :data:`MAX_OVERLAP` of the smaller one with a kept group;
    at most ``top_k`` per class, score > 0 only. Deterministic for a given ``seed``.

    ``blocks``: the widths of the feature blocks (:func:`embed_blocks`: one per network stage, the
    penultimate features last). Each block is centred and scaled to a mean squared norm of one
    before the clustering, so every depth weighs the same whatever its width or scale. ``None``:
    one block.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) != len(probabilities):
        raise ValueError("features, labels and probabilities must describe the same images")
    n_classes = probabilities.shape[1]
    names = list(class_names) if class_names else [str(c) for c in range(n_classes)]
    correct = probabilities.argmax(axis=1) == labels
    p_true = probabilities[np.arange(len(labels)), labels]
    z = pca(balance_blocks(features, blocks), PCA_DIMS)
    z = z / (z.std() + 1e-12)

    per_class: dict[int, list[dict]] = {}
    for c, members, source in _class_clusters(z, labels, n_classes, seed, cross_class):
        if len(members):
            cls_idx = np.flatnonzero(labels == c)
            per_class.setdefault(c, []).append({**_candidate(members, cls_idx, correct, p_true), "source": source})

    groups: list[SuspectedGroup] = []
    for c in range(n_classes):
        cls_idx = np.flatnonzero(labels == c)
        if not len(cls_idx):
            continue
        ref_error, kept = _best_candidates(per_class.get(c, []), cls_idx, correct, top_k)
        class_accuracy = float(correct[cls_idx].mean())
        for rank, cand in enumerate(kept, start=1):
            groups.append(_group(len(groups), c, names[c], cand, class_accuracy, 1.0 - ref_error, rank))
    return groups


def _group(gid: int, label: int, name: str, cand: dict, class_accuracy: float, reference_accuracy: float, rank: int):
    """A kept candidate as a :class:`SuspectedGroup`, with its sentence."""
    g = SuspectedGroup(
        id=gid,
        label=label,
        label_name=name,
        members=cand["members"],
        size=len(cand["members"]),
        accuracy=1.0 - cand["error"],
        class_accuracy=class_accuracy,
        rest_accuracy=cand["rest_accuracy"],
        reference_accuracy=reference_accuracy,
        error_low=cand["error_low"],
        error_high=cand["error_high"],
        confidence_gap=cand["confidence_gap"],
        score=cand["score"],
        rank=rank,
        source=cand["source"],
    )
    g.sentence = _sentence(g)
    return g


def _best_candidates(
    clusters: list[dict], cls_idx: np.ndarray, correct: np.ndarray, top_k: int
) -> tuple[float, list[dict]]:
    """One class's reference error rate and its best candidates, scored against it (see :func:`find_groups`)."""
    big = [d["error"] for d in clusters if len(d["members"]) >= REFERENCE_SHARE * len(cls_idx)]
    ref_error = min(big) if big else float((~correct[cls_idx]).mean())
    cands = [d for d in clusters if MIN_SIZE <= len(d["members"]) <= MAX_SHARE * len(cls_idx)]
    for d in cands:
        d["score"] = d["error_low"] - ref_error
    cands.sort(key=lambda d: (-d["score"], -len(d["members"]), int(d["members"][0])))
    return ref_error, _select([d for d in cands if d["score"] >= MIN_SCORE], top_k)


def analyse(
    bundle,
    dataset: ImageDataset,
    *,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    device="cpu",
    pixels: np.ndarray | None = None,
) -> Discovery:
    """Embed ``dataset`` with the bundle's own features and find its suspected groups. Any
    ``attribute`` column of the dataset is ignored."""
    if len(dataset) == 0:
        raise UserError("the dataset holds no images to look for groups in")
    feats, probs, blocks = embed_with_blocks(bundle, dataset, device, pixels=pixels)
    labels = dataset.labels
    groups = find_groups(feats, labels, probs, bundle.meta.class_names, top_k=top_k, seed=seed, blocks=blocks)
    return Discovery(groups, feats, labels, probs.argmax(axis=1), probs, list(bundle.meta.class_names))


def discover(bundle, dataset: ImageDataset, top_k: int = DEFAULT_TOP_K, seed: int = 0, device="cpu", pixels=None):
    """The suspected groups of ``dataset`` (see :func:`analyse`), best first within each class."""
    return analyse(bundle, dataset, top_k=top_k, seed=seed, device=device, pixels=pixels).groups


# -- suggestions --------------------------------------------------------------------------------
SUGGEST_NEIGHBOURS = 10
SUGGEST_CONFIDENCE_WEIGHT = 1.0  # tried 0.25, 1 and 3 on both suites (see docs/DISCOVERY.md)
SUGGEST_MIN_SCORE = 0.5  # below: not clearly in a failing group; ranked after those that are


@dataclass
class Suggestion:
    index: int  # into the pool dataset
    score: float
    group: int | None  # the suspected group most of its neighbours belong to (None: no group)
    wrong_share: float  # share of its evaluation neighbours the model gets wrong
    predicted: int
    confidence: float


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def suggest_from_arrays(
    found: Discovery, pool_features: np.ndarray, pool_probabilities: np.ndarray, k: int = SUGGEST_NEIGHBOURS
) -> list[Suggestion]:
    """Rank pool images (no labels needed) that fall in a suspected group and that the model
    probably gets wrong.

    Each pool image's ``k`` nearest evaluation images (cosine, penultimate features) vote: the
    score is the share of them that are in a suspected group *and* misclassified, plus
    ``SUGGEST_CONFIDENCE_WEIGHT`` × (1 − the model's confidence): uncertain images near a failing
    group are fixed with less change to the model than confidently wrong ones. Images scoring at least ``SUGGEST_MIN_SCORE`` come first,
    round-robin over the classes of their groups (best first within a class), so the first
    suggestions cover many groups; the others follow by score.
    """
    n_ref = len(found.labels)
    group_of = np.full(n_ref, -1, dtype=np.int64)
    for g in sorted(found.groups, key=lambda g: g.score):  # the best group wins overlaps
        group_of[g.members] = g.id
    wrong = found.predictions != found.labels
    ref = torch.from_numpy(_unit(found.features.astype(np.float32)))
    pool = torch.from_numpy(_unit(np.asarray(pool_features, dtype=np.float32)))
    k = min(k, n_ref)
    out: list[Suggestion] = []
    for start in range(0, len(pool), 1024):
        sims = pool[start : start + 1024] @ ref.T
        nn_idx = sims.topk(k, dim=1).indices.numpy()
        for row, neigh in enumerate(nn_idx):
            i = start + row
            gids = group_of[neigh]
            hit = (gids >= 0) & wrong[neigh]
            vals, counts = np.unique(gids[gids >= 0], return_counts=True)
            group = int(vals[counts.argmax()]) if len(vals) else None
            conf = float(pool_probabilities[i].max())
            out.append(
                Suggestion(
                    index=i,
                    score=float(hit.mean() + SUGGEST_CONFIDENCE_WEIGHT * (1 - conf)),
                    group=group,
                    wrong_share=float(wrong[neigh].mean()),
                    predicted=int(pool_probabilities[i].argmax()),
                    confidence=conf,
                )
            )
    # Round-robin over the classes the suspected groups belong to (the likely true class of the
    # image), best first within each: eight labels then cover eight classes' groups instead of
    # one group's look-alikes, which a repair over-learns. Images near no group come last.
    out.sort(key=lambda s: (-s.score, s.index))
    label_of = {g.id: g.label for g in found.groups}
    rounds: dict[int, int] = {}
    keyed = []
    for s in out:
        if s.group is None or s.score < SUGGEST_MIN_SCORE:
            keyed.append((1, 0, -s.score, s.index, s))
            continue
        lab = label_of[s.group]
        r = rounds.get(lab, 0)
        rounds[lab] = r + 1
        keyed.append((0, r, -s.score, s.index, s))
    keyed.sort(key=lambda t: t[:4])
    return [t[4] for t in keyed]


def suggest(bundle, found: Discovery, pool: ImageDataset, device="cpu", pixels=None) -> list[Suggestion]:
    """:func:`suggest_from_arrays` for a pool dataset (its labels and attributes are not used)."""
    feats, probs = embed(bundle, pool, device, pixels=pixels)
    return suggest_from_arrays(found, feats, probs)


# -- contact sheets and strips ----------------------------------------------------------------
def representatives(found: Discovery, group: SuspectedGroup, n: int = 24) -> np.ndarray:
    """Up to ``n`` members of a group, those nearest its feature centroid first."""
    members = np.asarray(group.members)
    f = found.features[members].astype(np.float64)
    d = ((f - f.mean(axis=0, keepdims=True)) ** 2).sum(axis=1)
    return members[np.lexsort((members, d))][:n]
