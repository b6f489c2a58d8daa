"""Acquire / release accesses to an ``int64`` array from numba code, for the hand-off between
the coreset's two threads (:mod:`._lazy`).

Numba has no atomics. A plain load in a wait loop may be hoisted out of the loop by the
compiler, and plain stores may be reordered across the store that publishes them; these
two intrinsics emit LLVM's atomic load (acquire) and store (release) instead, so that a
thread that sees a published value also sees every write made before it was published, on
any CPU. They compile into the caller (no dynamic globals: the callers stay cacheable).
"""

from __future__ import annotations

from numba.core import cgutils, types
from numba.extending import intrinsic


def _slot(context, builder, aryty, ary_val, idx):
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx])


@intrinsic
def load_acquire(typingctx, arr, i):
    """``arr[i]`` (an ``int64`` array) read with acquire ordering."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def store_release(typingctx, arr, i, v):
    """``arr[i] = v`` (an ``int64`` array) written with release ordering."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(i, types.Integer)
            and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def fetch_add(typingctx, arr, i, v):
    """``arr[i] += v`` (an ``int64`` array) as one atomic step; returns the old value."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(i, types.Integer)
            and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, "acq_rel")

    return types.int64(arr, i, v), codegen
