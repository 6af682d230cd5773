"""Objectives: values to MAXIMIZE, as pytrees whose numbers (channel index, weights, direction
vectors) are array leaves. Objectives stack into one batch, so one compiled program renders
any channels without recompiling (a batch of several forms selects each image's form).

Arithmetic: ``+ - * /`` between objectives and numbers; sums stay flat, so adding hundreds of
terms never nests deeply, and a sum's terms of one form are computed as one vmapped call (a
sum over 1,000 channels compiles about as fast as one channel). Penalties
(``total_variation``, ``l1``) are positive: subtract them.

Example:
    >>> import jax.numpy as jnp
    >>> acts = {"conv": jnp.arange(12.0).reshape(2, 2, 3)}
    >>> obj = channel("conv", 1) - 0.5 * channel("conv", 0)
    >>> float(obj(acts, jnp.zeros((2, 2, 3))))
    3.25
    >>> batch = stack([channel("conv", c) for c in range(3)])
    >>> batch.params.shape
    (3,)
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, ObjectiveIndexError


@jax.tree_util.register_pytree_node_class
class Objective:
    """``fn(params, activations, image, static) -> scalar``; ``params`` are array leaves and
    ``static`` is hashable structure (layer names, operators) that fixes the compiled program."""

    def __init__(self, fn: Callable, params: Any, static: tuple,
                 layers: Iterable[str] = frozenset()):
        self.fn, self.params, self.static, self.layers = fn, params, static, frozenset(layers)

    def __call__(self, activations: dict, image) -> jax.Array:
        return self.fn(self.params, activations, image, self.static)

    def tree_flatten(self):
        return (self.params,), (self.fn, self.static, self.layers)

    @classmethod
    def tree_unflatten(cls, aux, children):
        fn, static, layers = aux
        return cls(fn, children[0], static, layers)

    def __repr__(self):
        return f"Objective({self.fn.__name__}, {self.static})"

    def __add__(self, other):
        return _sum([self, as_objective(other)])

    __radd__ = __add__

    def __neg__(self):
        return -1.0 * self

    def __sub__(self, other):
        return self + (-as_objective(other))

    def __rsub__(self, other):
        return as_objective(other) + (-self)

    def __mul__(self, other):
        return _binary(operator.mul, self, as_objective(other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _binary(operator.truediv, self, as_objective(other))

    def __rtruediv__(self, other):
        return _binary(operator.truediv, as_objective(other), self)


def _leaf(value, dtype):
    """An objective's number as a host array (creating it runs no device program); a JAX
    array (say, a traced one) stays one."""
    if isinstance(value, jax.Array):
        return value.astype(dtype)
    return np.asarray(value, dtype)


def _constant_value(params, acts, image, static):
    return params


def as_objective(x) -> Objective:
    """An objective as is; a number as a constant objective (its value an array leaf)."""
    if isinstance(x, Objective):
        return x
    return Objective(_constant_value, _leaf(x, np.float32), ("constant",))


def _terms_value(params, acts, image, static):
    """The sum of the terms. Terms of one form (function, structure and leaf shapes) are
    evaluated as one vmapped call: a sum of 1,000 channels is one gather, not 1,000 programs'
    worth of reductions for XLA to compile."""
    groups: dict = {}
    for p, (fn, st) in zip(params, static[1]):
        leaves, structure = jax.tree_util.tree_flatten(p)
        form = (fn, st, structure, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
        groups.setdefault(form, []).append(p)
    total = 0.0
    for (fn, st, *_), members in groups.items():
        if len(members) == 1:
            total = total + fn(members[0], acts, image, st)
        else:
            stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *members)
            term = jax.vmap(lambda q, fn=fn, st=st: fn(q, acts, image, st))
            total = total + term(stacked).sum()
    return total


def _sum(objs: Sequence[Objective]) -> Objective:
    terms = []
    for o in objs:
        terms.extend(_split_terms(o))
    return Objective(_terms_value, tuple(o.params for o in terms),
                     ("sum", tuple((o.fn, o.static) for o in terms)),
                     frozenset().union(*(o.layers for o in terms)))


def _split_terms(o: Objective):
    if o.fn is _terms_value:
        return [Objective(fn, p, st, o.layers) for p, (fn, st) in zip(o.params, o.static[1])]
    return [o]


def total(objs: Sequence[Objective]) -> Objective:
    """The sum of many objectives as one flat sum (no recursion depth for 1,000 terms)."""
    terms = [as_objective(o) for o in objs]
    if not terms:
        raise ValueError("total() of no objectives: pass at least one")
    return _sum(terms)


def _binary_value(params, acts, image, static):
    _, op, (fa, sa), (fb, sb) = static
    return op(fa(params[0], acts, image, sa), fb(params[1], acts, image, sb))


def _binary(op, a: Objective, b: Objective) -> Objective:
    return Objective(_binary_value, (a.params, b.params),
                     ("binary", op, (a.fn, a.static), (b.fn, b.static)), a.layers | b.layers)


def _mixed_value(params, acts, image, static):
    form, per_form = params
    branches = [lambda p=p, fn=fn, st=st: jnp.asarray(fn(p, acts, image, st), jnp.float32)
                for p, (fn, st) in zip(per_form, static[1])]
    return jax.lax.switch(form, branches)


def _stacked(objs: Sequence[Objective]) -> Objective:
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *objs)


def stack(objs: Sequence[Objective]) -> Objective:
    """Stack objectives into one batch along axis 0. Objectives of one form (e.g. ``channel``
    on one layer) stack as they are; a list of several forms becomes one mixed batch, in which
    each image's form index picks its objective, so that any list compiles one program.

    Example:
        >>> mixed = stack([channel("conv", 0), class_logit(3), channel("conv", 2)])
        >>> mixed.params[0].tolist()   # each image's form
        [0, 1, 0]
    """
    objs = list(objs)
    structures = [jax.tree_util.tree_structure(o) for o in objs]
    forms = list(dict.fromkeys(structures))
    if len(forms) == 1:
        return _stacked(objs)
    form_of = np.array([forms.index(s) for s in structures], np.int32)
    # each form's parameters for every image; the images of other forms hold a copy of the
    # form's first objective (valid numbers that their own form index never selects)
    firsts = [objs[structures.index(f)] for f in forms]
    per_form = tuple(_stacked([o if k == form_of[i] else firsts[k] for i, o in enumerate(objs)])
                     for k, _ in enumerate(forms))
    return Objective(_mixed_value, (form_of, tuple(o.params for o in per_form)),
                     ("mixed", tuple((o.fn, o.static) for o in firsts)),
                     frozenset().union(*(o.layers for o in firsts)))


# --- activation objectives -------------------------------------------------------------------

def _channel_value(c, acts, image, static):
    a = acts[static[1]]
    return jnp.take(a, c, axis=-1).mean()


def _check_given(index, message: str) -> None:
    if index is None:
        raise TypeError(message)


def channel(layer: str, index) -> Objective:
    """Mean activation of one channel over all positions."""
    _check_given(index, "channel() needs a channel index")
    return Objective(_channel_value, _leaf(index, np.int32), ("channel", layer), {layer})


CENTRE = np.iinfo(np.int32).min  # a neuron coordinate meaning "the middle of the map"


def _position(v, n):
    return jnp.where(v == CENTRE, n // 2, jnp.where(v < 0, v + n, v))


def _neuron_value(params, acts, image, static):
    c, y, x = params
    a = acts[static[1]]
    h, w = a.shape[-3:-1]
    return a[_position(y, h), _position(x, w), c]


def neuron(layer: str, index, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of one channel at one spatial position (default: the centre; negative
    coordinates count from the end, as in numpy)."""
    _check_given(index, "neuron() needs a channel index")
    params = (_leaf(index, np.int32),) + tuple(_leaf(CENTRE if v is None else v, np.int32)
                                               for v in (y, x))
    return Objective(_neuron_value, params, ("neuron", layer), {layer})


def unit(layer: str, index, view: str = "channel") -> Objective:
    """One unit's objective as a view shows it (``featviz.config.VIEWS``): its ``channel``, its
    centre ``neuron``, or its ``negative`` (the channel minimized: what it responds to least).

    >>> sorted(unit("conv", 3, "negative").layers)
    ['conv']
    """
    views = {"channel": lambda: channel(layer, index), "neuron": lambda: neuron(layer, index),
             "negative": lambda: -channel(layer, index)}
    if view not in views:
        raise ConfigError(f"view must be one of {', '.join(views)}, not {view!r}")
    return views[view]()


def _direction_value(vec, acts, image, static):
    a = acts[static[1]]
    return (a * vec).sum(-1).mean()


def direction(layer: str, vector) -> Objective:
    """Mean over positions of the activation vector's dot product with ``vector``."""
    return Objective(_direction_value, _leaf(vector, np.float32), ("direction", layer), {layer})


def _class_logit_value(c, acts, image, static):
    return acts[static[1]][c]


def class_logit(index, layer: str = "logits") -> Objective:
    """One class's logit (pre-softmax score)."""
    _check_given(index, "class_logit() needs a class index")
    return Objective(_class_logit_value, _leaf(index, np.int32), ("class_logit", layer), {layer})


def _deepdream_value(params, acts, image, static):
    return jnp.mean(acts[static[1]] ** 2)


def deepdream(layer: str) -> Objective:
    """Mean squared activation of a whole layer (DeepDream)."""
    return Objective(_deepdream_value, (), ("deepdream", layer), {layer})


def _indexed(o: Objective):
    """(form, layer, params) of every indexed term of ``o``, through sums and products."""
    if o.fn is _terms_value:
        for p, (fn, st) in zip(o.params, o.static[1]):
            yield from _indexed(Objective(fn, p, st))
    elif o.fn is _binary_value:
        for p, (fn, st) in zip(o.params, o.static[2:]):
            yield from _indexed(Objective(fn, p, st))
    elif o.fn is _mixed_value:
        for p, (fn, st) in zip(o.params[1], o.static[1]):
            yield from _indexed(Objective(fn, p, st))
    elif o.static[0] in ("channel", "neuron", "class_logit", "direction"):
        yield o.static[0], o.static[1], o.params


def _outside(values, n: int):
    """The first of ``values`` outside ``-n .. n-1`` (numpy's valid indices), else None."""
    values = np.asarray(values).ravel()
    bad = values[(values < -n) | (values >= n)]
    return int(bad[0]) if bad.size else None


def check_indices(o: Objective, layer_shape: Callable[[str], tuple]) -> None:
    """Raise ``ObjectiveIndexError`` where a channel, class or neuron position of ``o`` (one
    objective or a stacked batch) lies outside its layer's ``layer_shape(layer)``, which a
    compiled program would silently read as NaN. Traced values are not checked."""
    for form, layer, params in _indexed(o):
        values = params if form == "neuron" else (params,)
        if any(isinstance(v, jax.core.Tracer) for v in values):
            continue
        shape = layer_shape(layer)
        if form == "neuron" and len(shape) < 3:
            raise ObjectiveIndexError(f"layer {layer!r} has no spatial map (shape {shape}), so "
                                      "it has no neurons to pick: use channel() or class_logit()")
        if form == "direction":
            if np.shape(params)[-1] != shape[-1]:
                raise ObjectiveIndexError(f"the direction has {np.shape(params)[-1]} components "
                                          f"but layer {layer!r} has {shape[-1]} channels")
            continue
        what = "class" if form == "class_logit" else "channel"
        bad = _outside(values[0], shape[-1])
        if bad is not None:
            raise ObjectiveIndexError(f"{what} {bad} is out of range: layer {layer!r} has "
                                      f"{what}{'es' if what == 'class' else 's'} "
                                      f"0-{shape[-1] - 1}")
        for v, n, axis in zip(values[1:], shape[:2], ("y", "x")):
            bad = _outside(np.asarray(v)[np.asarray(v) != CENTRE], n)
            if bad is not None:
                raise ObjectiveIndexError(f"neuron {axis}={bad} is outside layer {layer!r}, "
                                          f"whose map is {n} units across")


# --- image penalties (positive: subtract them) ---------------------------------------------

def _tv_value(params, acts, image, static):
    return (jnp.abs(jnp.diff(image, axis=0)).sum() + jnp.abs(jnp.diff(image, axis=1)).sum())


def total_variation() -> Objective:
    """Total variation of the image (sum of absolute neighbour differences)."""
    return Objective(_tv_value, (), ("total_variation",))


def _l1_value(constant, acts, image, static):
    return jnp.abs(image - constant).sum()


def l1(constant: float = 0.5) -> Objective:
    """L1 distance of the image from a constant grey."""
    return Objective(_l1_value, _leaf(constant, np.float32), ("l1",))


# --- batch-level term ----------------------------------------------------------------------

class Diversity:
    """Batch term (applied outside vmap): minus the mean pairwise cosine similarity of the
    images' Gram matrices at ``layer`` (Lucid's diversity), times ``weight``. With ``group``,
    the batch is consecutive groups of that many images (say, several images of each unit) and
    the term is summed over the groups, each pushing apart its own images only."""

    def __init__(self, layer: str, weight: float = 1.0, group: int | None = None):
        self.layer, self.weight, self.group = layer, weight, group

    def __call__(self, batch_acts: dict) -> jax.Array:
        a = batch_acts[self.layer]
        group = self.group or a.shape[0]
        grouped = a.reshape((a.shape[0] // group, group) + a.shape[1:])
        return jax.vmap(self._within)(grouped).sum()

    def _within(self, a) -> jax.Array:
        n, c = a.shape[0], a.shape[-1]
        flat = a.reshape(n, -1, c)
        grams = jnp.einsum("npc,npd->ncd", flat, flat).reshape(n, -1)
        grams = grams / (jnp.linalg.norm(grams, axis=-1, keepdims=True) + 1e-8)
        sim = grams @ grams.T
        off_diag = (sim.sum() - jnp.trace(sim)) / max(n * (n - 1), 1)
        return -self.weight * off_diag


def diversity(layer: str, weight: float = 1.0, group: int | None = None) -> Diversity:
    """See ``Diversity``; pass it to a renderer as ``batch_objective``."""
    return Diversity(layer, weight, group)
