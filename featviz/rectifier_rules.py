"""Re-run any function through its jaxpr with rectifier backward rules swapped, or with an
intermediate output perturbed; the model's code is never edited.

Deconvnet (Zeiler & Fergus, 2014) and guided backprop (Springenberg et al., 2015) differ from
the plain gradient only in how a gradient crosses a rectifier. ``evaluate(fun, *args,
rule=...)`` traces ``fun`` with ``jax.make_jaxpr`` and evaluates the jaxpr equation by
equation, putting a ``jax.custom_vjp`` rectifier in place of

* ``max(x, 0)`` (``jax.nn.relu``, ``jnp.maximum(x, 0)``),
* ``min(r, c)`` where ``r`` came out of such a rectifier (``jax.nn.relu6`` is
  ``min(max(x, 0), 6)``) and ``c`` is a constant,
* ``clamp(lo, x, hi)`` with constant bounds,

also inside ``jit`` and ``custom_jvp_call`` sub-jaxprs (``relu``/``relu6`` are custom_jvp
functions around a jit). Every other equation, ``custom_vjp_call`` included (such as the
EfficientNet depthwise conv), is bound as it is, so a rectifier hidden inside a custom_vjp
function or a loop keeps its ordinary gradient.

Rules, for an incoming gradient ``g`` at a rectifier with input ``x`` and linear range (lo, hi):

* ``"guided"``: ``g`` where ``lo < x < hi`` and ``g > 0``. For relu6 a unit saturated at 6
  passes nothing, like one below 0: guided backprop keeps exactly the plain gradient's
  support, only the negative part is removed.
* ``"deconvnet"``: ``g`` where ``g > 0``, whatever ``x`` was.
* ``"linear"``: ``g`` everywhere (rectifiers back-propagate as the identity).
* ``"redirected"`` (Lucid's redirected ReLU gradient, for feature visualization): the plain
  gradient, except for an example (index along axis 0) whose plain gradient at this rectifier
  is zero everywhere: there ``g`` passes wherever it would not push an input further outside
  (lo, hi), so a unit that starts dead can still be brought to life. The gradient ``g`` is that
  of a loss to minimize.
* ``"unblocked"``: ``g`` wherever it would not push an input further outside (lo, hi), at
  every position and for every example: the redirected gradient without its per-example
  check. Being elementwise, it costs no more than the plain gradient, also behind a traced
  switch (``evaluate(..., on=...)``); the renderer's warm-up uses it.
* ``None``: ordinary autodiff.

Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sum(jnp.array([1.0, -1.0]) * jax.nn.relu(x))
    >>> x = jnp.array([2.0, 3.0])
    >>> jax.grad(f)(x), jax.grad(lambda v: evaluate(f, v, rule="guided"))(x)
    (Array([ 1., -1.], dtype=float32), Array([1., 0.], dtype=float32))
"""
from __future__ import annotations

from functools import partial

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal, Var

RULES = ("guided", "deconvnet", "linear", "redirected", "unblocked")
UNBLOCKED_SHARE = 0.01  # of the gradient that the "unblocked" rule passes to inactive units
_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
            "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr"}


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rectify(rules, x, lo, hi, on):
    """``clip(x, lo, hi)`` whose gradient follows ``rules[0]`` where ``on`` is true, else
    ``rules[1]``."""
    return jnp.clip(x, lo, hi)


def _rectify_fwd(rules, x, lo, hi, on):
    return jnp.clip(x, lo, hi), (x, lo, hi, on)


def _outward(g, x, lo, hi):
    """Where a descent step along ``-g`` would push ``x`` further outside (lo, hi)."""
    return ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))


def _redirected(g, x, lo, hi):
    plain = jnp.where((x > lo) & (x < hi), g, 0)
    redirected = jnp.where(_outward(g, x, lo, hi), 0, g)
    alive = jnp.any(plain != 0, axis=tuple(range(1, g.ndim)), keepdims=True)
    return jnp.where(alive, plain, redirected)


def _rule_gradient(rule, g, x, lo, hi):
    """The gradient ``rule`` passes back through a rectifier with input ``x`` and range (lo, hi)."""
    if rule == "redirected":
        return _redirected(g, x, lo, hi)
    if rule == "unblocked":
        inside = (x > lo) & (x < hi)
        return jnp.where(inside, g, jnp.where(_outward(g, x, lo, hi), 0, UNBLOCKED_SHARE * g))
    if rule == "plain":
        return jnp.where((x > lo) & (x < hi), g, 0)
    keep = jnp.ones_like(g, bool) if rule == "linear" else g > 0
    if rule == "guided":
        keep &= (x > lo) & (x < hi)
    return jnp.where(keep, g, 0)


def _rectify_bwd(rules, residuals, g):
    x, lo, hi, on = residuals
    if rules[0] == rules[1]:
        gx = _rule_gradient(rules[0], g, x, lo, hi)
    else:  # a traced switch: one program serves both rules (elementwise rules fuse into one)
        gx = jnp.where(on, _rule_gradient(rules[0], g, x, lo, hi),
                       _rule_gradient(rules[1], g, x, lo, hi))
    return (gx.astype(g.dtype), jnp.zeros_like(lo), jnp.zeros_like(hi),
            np.zeros(np.shape(on), jax.dtypes.float0))


_rectify.defvjp(_rectify_fwd, _rectify_bwd)


def _constant(value):
    """``value`` as a numpy array if it is known at trace time, else None."""
    return None if isinstance(value, jax.core.Tracer) else np.asarray(value)


def _rectifier(eqn, invals, rectified):
    """(x, lo, hi) if the equation is a rectifier of a float ``x``, else None."""
    name = eqn.primitive.name
    if not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
        return None
    consts = [_constant(v) for v in invals]
    if name == "clamp" and consts[0] is not None and consts[2] is not None:
        return invals[1], invals[0], invals[2]
    if name in ("max", "min"):
        for i in (0, 1):
            other, c = invals[i], consts[1 - i]
            if c is None:
                continue
            if name == "max" and np.all(c == 0):
                return other, invals[1 - i], jnp.inf
            if name == "min" and isinstance(eqn.invars[i], Var) and eqn.invars[i] in rectified:
                return other, -jnp.inf, invals[1 - i]
    return None


def _has_rectifier(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("max", "min", "clamp"):
            return True
        key = _INLINED.get(eqn.primitive.name)
        if key and _has_rectifier(eqn.params[key].jaxpr):
            return True
    return False


def _eval(jaxpr, consts, args, rule, taps, on):
    """Evaluate ``jaxpr``; returns (outputs, which outputs came straight out of a rectifier)."""
    env, rectified = {}, set()

    def read(atom):
        return atom.val if isinstance(atom, Literal) else env[atom]

    def write(var, value, tap=True):
        env[var] = value + taps[var] if tap and var in taps else value

    for var, value in zip(jaxpr.constvars, consts):
        write(var, value)
    for var, value in zip(jaxpr.invars, args):
        write(var, value)
    for eqn in jaxpr.eqns:
        invals = [read(a) for a in eqn.invars]
        found = _rectifier(eqn, invals, rectified) if rule is not None else None
        key = _INLINED.get(eqn.primitive.name)
        sub = eqn.params[key] if key else None
        tapped_inside = {inner: taps[outer] for outer, inner in
                         zip(eqn.outvars, sub.jaxpr.outvars if sub is not None else ())
                         if outer in taps and isinstance(inner, Var)}
        if found is not None:
            x, lo, hi = found
            if isinstance(on, (bool, np.bool_)):  # known now: no switch in the program
                rules, switch = (rule if on else "plain",) * 2, np.True_
            else:
                rules, switch = (rule, "plain"), on
            outs = [_rectify(rules, x, jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype), switch)]
            flags = [True]
        elif sub is not None and (eqn.primitive.name != "custom_jvp_call" or tapped_inside
                                  or (rule is not None and _has_rectifier(sub.jaxpr))):
            # a tapped output of a call is tapped where the call computes it, so that what the
            # call computes from it sees the change too
            outs, flags = _eval(sub.jaxpr, sub.consts, invals, rule, tapped_inside, on)
        else:
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
            flags = [False] * len(outs)
        moved = {outer for outer, inner in zip(eqn.outvars, sub.jaxpr.outvars)
                 if inner in tapped_inside} if tapped_inside and sub is not None else set()
        for var, value, flag in zip(eqn.outvars, outs, flags):
            write(var, value, tap=var not in moved)
            if flag:
                rectified.add(var)
    outvars = jaxpr.outvars
    return ([read(v) for v in outvars],
            [isinstance(v, Var) and v in rectified for v in outvars])


def evaluate(fun, *args, rule: str | None = None, perturb: dict | None = None, on=True):
    """``fun(*args)`` evaluated through its jaxpr, differentiable, jit-able.

    ``rule``: one of ``RULES`` (see the module docstring) or None for the plain gradient.
    ``on``: a boolean, possibly traced, that switches the rule: where it is False, the
    rectifiers pass the plain gradient, so one compiled program serves steps with and without
    the rule (each rectifier's backward runs only the branch taken).
    ``perturb``: ``{i: delta}`` adds ``delta`` to the i-th output leaf of ``fun`` where it is
    computed, so that everything downstream of it sees the change; the gradient with respect
    to ``delta`` (at zero) is the gradient with respect to that intermediate value.
    """
    if rule is not None and rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*args)
    outvars = closed.jaxpr.outvars
    taps = {outvars[i]: delta for i, delta in (perturb or {}).items()
            if not isinstance(outvars[i], Literal)}
    outs, _ = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), rule, taps, on)
    return jax.tree.unflatten(jax.tree.structure(shapes), outs)
