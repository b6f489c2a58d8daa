"""Acquire / release accesses to an ``int64`` array from numba code, for the hand-off between
the coreset's two threads (:mod:`._lazy`).

Numba has no atomics. A plain load in a wait loop may be hoisted out of the loop by the
compiler, and plain stores may be reordered across the store that publishes them; these
two intrinsics emit LLVM's atomic load (acquire) and store (release) instead, so that a
thread that sees a published value also sees every write made before it was published, on
any CPU. They compile into the caller (no dynamic globals: the callers stay cacheable).
"""

from __future__ import annotations

import os

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


def _fits(arr, i, v=None) -> bool:
    """An ``int64`` array, an integer index and (if given) an integer value."""
    return (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(i, types.Integer)
            and (v is None or isinstance(v, types.Integer)))


def _slot(context, builder, sig, args):
    """The address of ``arr[i]`` and, for a write, the value as ``int64``."""
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
    val = context.cast(builder, args[2], sig.args[2], types.int64) if len(args) > 2 else None
    return ptr, val


@intrinsic
def load_acquire(typingctx, arr, i):
    """``arr[i]`` (an ``int64`` array) read with acquire ordering."""
    if not _fits(arr, i):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args)[0], "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def store_release(typingctx, arr, i, v):
    """``arr[i] = v`` (an ``int64`` array) written with release ordering."""
    if not _fits(arr, i, v):
        return None

    def codegen(context, builder, sig, args):
        ptr, val = _slot(context, builder, sig, args)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def fetch_add(typingctx, arr, i, v):
    """``arr[i] += v`` (an ``int64`` array) as one atomic step; returns the old value."""
    if not _fits(arr, i, v):
        return None

    def codegen(context, builder, sig, args):
        ptr, val = _slot(context, builder, sig, args)
        return builder.atomic_rmw("add", ptr, val, "acq_rel")

    return types.int64(arr, i, v), codegen


@intrinsic
def yield_cpu(typingctx):
    """Give the CPU to another runnable thread (``sched_yield``; nothing where the C library
    has none), for wait loops that have spun a while: a waiter must not keep the core of the
    thread it waits for when the machine has more busy threads than cores."""

    def codegen(context, builder, sig, args):
        if os.name == "posix":
            fnty = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()

    return types.none(), codegen
