"""The NaN guard's check: what, if anything, became NaN or infinite after a round."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.asarray(leaves)) if leaves else jnp.asarray(True)


def first_non_finite(train_metrics: dict[str, Any], params: Any) -> str | None:
    """What went NaN or infinite after a round: a training metric (losses first, by name) or
    the first parameter leaf, by its path; None when everything is finite."""
    for name in sorted(train_metrics, key=lambda n: ("loss" not in n, n)):
        if not np.all(np.isfinite(np.asarray(train_metrics[name]))):
            return f"the training metric {name}"
    if bool(_all_finite(params)):
        return None
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            return f"the parameter params{jax.tree_util.keystr(path)}"
    return "a parameter"
