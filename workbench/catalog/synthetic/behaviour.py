"""Users and their interactions: taste vectors and habits, and exact sampling of what they visit next."""

from __future__ import annotations

import numpy as np
import polars as pl

from workbench.catalog.synthetic.attributes import (
    CELLS_PER_LEAF,
    COLOURS,
    COMPLEMENT_IDX,
    EVENT_PRIOR,
    EVENT_TYPES,
    LEAVES,
    MATERIALS,
    N_CELLS,
    P_COMPLEMENT_RANGE,
    SPAN_US,
    START_US,
    STYLES,
    TASTE_DIM,
    TASTE_OFFSETS,
)
from workbench.catalog.synthetic.config import SyntheticConfig
from workbench.catalog.synthetic.products import _id_width
from workbench.catalog.synthetic.randomness import _S_STEP, _S_USER, _choice, _normal, _uniform


def _user_ids(idx: np.ndarray, n_users: int) -> list[str]:
    w = _id_width(n_users, 5)
    return [f"u{i:0{w}d}" for i in idx.tolist()]


def _draw_users(cfg: SyntheticConfig, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Taste vectors (float32, as stored in the truth), habits and activity of users `idx`."""
    seed = cfg.seed
    k = idx[:, None]
    taste = np.zeros((idx.size, TASTE_DIM), dtype=np.float64)
    cat = _normal(seed, _S_USER, k, np.arange(len(LEAVES))[None, :]) * 0.7
    fav = np.argsort(_uniform(seed, _S_USER, k, 100 + np.arange(len(LEAVES))[None, :]), axis=1)[:, :3]
    np.put_along_axis(cat, fav, np.take_along_axis(cat, fav, 1) + 2.5, axis=1)
    o = TASTE_OFFSETS
    taste[:, : len(LEAVES)] = cat
    col = _normal(seed, _S_USER, k, 200 + np.arange(len(COLOURS))[None, :]) * 0.8
    col[np.arange(idx.size), (_uniform(seed, _S_USER, idx, 300) * len(COLOURS)).astype(int)] += 1.5
    taste[:, o["colour"] : o["colour"] + len(COLOURS)] = col
    taste[:, o["material"] : o["material"] + len(MATERIALS)] = _normal(seed, _S_USER, k, 400 + np.arange(len(MATERIALS))[None, :]) * 0.7
    sty = _normal(seed, _S_USER, k, 500 + np.arange(len(STYLES))[None, :]) * 0.8
    sty[np.arange(idx.size), (_uniform(seed, _S_USER, idx, 301) * len(STYLES)).astype(int)] += 1.5
    taste[:, o["style"] : o["style"] + len(STYLES)] = sty
    taste = taste.astype(np.float32).astype(np.float64)  # the generator uses exactly what the truth stores
    lo, hi = P_COMPLEMENT_RANGE
    p_comp = (lo + (hi - lo) * _uniform(seed, _S_USER, idx, 302)).astype(np.float32).astype(np.float64)
    sigma = 0.7
    act = np.exp(sigma * _normal(seed, _S_USER, idx, 303) - sigma**2 / 2)
    n_events = np.clip(np.round(cfg.events_per_user * act), 2, 10 * cfg.events_per_user).astype(np.int64)
    return {"taste": taste, "p_complement": p_comp, "n_events": n_events, "favourites": np.sort(fav, axis=1)}


class _Sampler:
    """Exact sampling of P(item) ∝ exp(taste · x_item + popularity_item), factorised.

    An item's taste score depends only on its cell (leaf, colour, material, style),
    so a draw picks a category, then a cell within it, then an item within the cell
    by popularity; per-user work is O(cells), never O(items).
    """

    def __init__(self, items: dict[str, np.ndarray]) -> None:
        self.cell = (((items["leaf"] * len(COLOURS) + items["colour"]) * len(MATERIALS) + items["material"]) * len(STYLES) + items["style"]).astype(np.int64)
        pop = items["popularity"]
        self.order = np.argsort(self.cell, kind="stable")
        sc = self.cell[self.order]
        w = np.exp(pop[self.order] - pop.max())
        self.cell_start = np.searchsorted(sc, np.arange(N_CELLS), side="left")
        self.cell_end = np.searchsorted(sc, np.arange(N_CELLS), side="right")
        z = np.zeros(N_CELLS)
        np.add.at(z, sc, w)
        # log Z_cell (+ pop.max, irrelevant up to a constant); -inf for empty cells
        self.z_rel = z / z.max()
        with np.errstate(divide="ignore"):
            self.log_z = np.log(z)
        cum = np.cumsum(w)
        before = np.where(self.cell_start > 0, cum[np.maximum(self.cell_start - 1, 0)], 0.0)
        within = (cum - before[sc]) / z[sc]
        # clamp: rounding may push a fraction a hair past 1, which would break monotonicity
        within = np.where(np.arange(sc.size) == self.cell_end[sc] - 1, 1.0, np.minimum(within, 1.0))
        self.item_cdf = sc + within  # monotone: cell index + fraction within the cell
        cells = np.arange(N_CELLS)
        rest = cells
        self.cell_style = rest % len(STYLES)
        rest = rest // len(STYLES)
        self.cell_material = rest % len(MATERIALS)
        rest = rest // len(MATERIALS)
        self.cell_colour = rest % len(COLOURS)
        self.cell_leaf = rest // len(COLOURS)
        # asarray: .any(axis=...) is typed as maybe a scalar; this one is always an array
        self.leaf_nonempty = np.asarray(np.isfinite(self.log_z.reshape(len(LEAVES), CELLS_PER_LEAF)).any(axis=1))

    def prepare(self, taste: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user: category log-weights (B, L) and flattened within-category cell CDFs.

        An item's weight factorises: exp(t_colour) * exp(t_material) * exp(t_style) *
        Z_cell, so the (B, leaf, colour, material, style) tensor is a broadcast product.
        """
        o = TASTE_OFFSETS
        nb = taste.shape[0]

        def e(name: str, n: int) -> np.ndarray:
            t = taste[:, o[name] : o[name] + n]
            return np.exp(t - t.max(axis=1, keepdims=True))

        ec = e("colour", len(COLOURS))[:, None, :, None, None]
        em = e("material", len(MATERIALS))[:, None, None, :, None]
        es = e("style", len(STYLES))[:, None, None, None, :]
        z = self.z_rel.reshape(1, len(LEAVES), len(COLOURS), len(MATERIALS), len(STYLES))
        w = (z * ec) * em
        w = np.multiply(w, es, out=np.empty((nb,) + z.shape[1:])).reshape(nb, len(LEAVES), CELLS_PER_LEAF)
        cdf = np.cumsum(w, axis=2, out=w)  # in place: these arrays are the bulk of the memory
        tot = cdf[:, :, -1].copy()
        with np.errstate(divide="ignore"):
            log_mass = np.log(tot)  # up to a per-user constant, which the softmax ignores
        # x / x is exactly 1.0, so every block ends at exactly 1 (trailing empty cells too)
        cdf /= np.where(tot > 0, tot, 1.0)[:, :, None]
        cat_logw = taste[:, : len(LEAVES)] + log_mass  # -inf for empty categories
        cdf += (np.arange(nb)[:, None] * len(LEAVES) + np.arange(len(LEAVES))[None, :])[:, :, None]
        return cat_logw, cdf.ravel()

    def draw_leaf(self, cat_logw: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A category for each of `rows` by the user's overall taste."""
        lw = cat_logw - cat_logw.max(axis=1, keepdims=True)
        cdf = np.cumsum(np.exp(lw), axis=1)
        cdf /= cdf[:, -1:]
        return np.minimum((cdf[rows] <= u[:, None]).sum(axis=1), len(LEAVES) - 1)

    def draw(self, cat_logw: np.ndarray, flat: np.ndarray, rows: np.ndarray, leaf: np.ndarray | None,
             u_cat: np.ndarray, u_cell: np.ndarray, u_item: np.ndarray) -> np.ndarray:
        """Item indices for `rows` (users of the prepared batch); `leaf` forces the category."""
        if leaf is None:
            leaf = self.draw_leaf(cat_logw, rows, u_cat)
        uc = np.minimum(u_cell, 1.0 - 1e-9)
        target = rows * len(LEAVES) + leaf + uc
        g = np.searchsorted(flat, target, side="right")
        cell_in_leaf = np.clip(g - (rows * len(LEAVES) + leaf) * CELLS_PER_LEAF, 0, CELLS_PER_LEAF - 1)
        cell = leaf * CELLS_PER_LEAF + cell_in_leaf
        ui = np.minimum(u_item, 1.0 - 1e-9)
        k = np.searchsorted(self.item_cdf, cell + ui, side="right")
        k = np.clip(k, self.cell_start[cell], np.maximum(self.cell_end[cell] - 1, self.cell_start[cell]))
        return self.order[k]


def _interactions_batch(cfg: SyntheticConfig, sampler: _Sampler, items: dict[str, np.ndarray],
                        idx: np.ndarray, users: dict[str, np.ndarray], item_id_arr: np.ndarray) -> pl.DataFrame:
    seed = cfg.seed
    cat_logw, flat = sampler.prepare(users["taste"])
    n_ev = users["n_events"]
    steps = int(n_ev.max())
    u = _uniform(seed, _S_STEP, idx[:, None, None], np.arange(steps)[None, :, None], np.arange(4)[None, None, :])
    rows = np.repeat(np.arange(idx.size), steps)
    # The category of every visit first: a global draw, or the complement of the previous
    # visit's category (which is known without drawing the item), then all items at once.
    glob_leaf = sampler.draw_leaf(cat_logw, rows, u[:, :, 0].ravel()).reshape(idx.size, steps)
    comp_roll = u[:, :, 3] < users["p_complement"][:, None]
    leaf = np.empty_like(glob_leaf)
    leaf[:, 0] = glob_leaf[:, 0]
    for s in range(1, steps):
        comp = COMPLEMENT_IDX[leaf[:, s - 1]]
        use = comp_roll[:, s] & sampler.leaf_nonempty[comp]
        leaf[:, s] = np.where(use, comp, glob_leaf[:, s])
    keep = np.arange(steps)[None, :] < n_ev[:, None]
    r, c = np.nonzero(keep)
    it = sampler.draw(cat_logw, flat, r, leaf[r, c], u[r, c, 0], u[r, c, 1], u[r, c, 2])
    # timestamps: sessions of short gaps separated by long ones
    gaps_u = _uniform(seed, _S_STEP, idx[:, None], 10_000 + np.arange(steps)[None, :])
    kind_u = _uniform(seed, _S_STEP, idx[:, None], 20_000 + np.arange(steps)[None, :])
    short = -np.log1p(-gaps_u) * 180e6  # ~3 minutes
    long_ = -np.log1p(-gaps_u) * 2 * 86_400e6  # ~2 days
    gap = np.where(kind_u < 0.8, short, long_).astype(np.int64) + 1_000_000
    gap[:, 0] = (START_US + _uniform(seed, _S_USER, idx, 304) * SPAN_US).astype(np.int64)
    ts = np.cumsum(gap, axis=1)
    ev = _choice(_uniform(seed, _S_STEP, idx[:, None], 30_000 + np.arange(steps)[None, :]).ravel(), EVENT_PRIOR).reshape(idx.size, steps)
    evn = ev[r, c]
    value = np.where(evn == EVENT_TYPES.index("purchase"), items["price"][it], np.nan)
    uids = np.array(_user_ids(idx, cfg.n_users))
    return pl.DataFrame(
        {
            "user_id": uids[r],
            "item_id": item_id_arr[it],
            "timestamp": pl.Series(ts[r, c]).cast(pl.Datetime("us", "UTC")),
            "event": np.array(EVENT_TYPES)[evn],
            "value": pl.Series(value).fill_nan(None),
        }
    )
