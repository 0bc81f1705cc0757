"""The C binding fuzzed: seeded random arguments straight into qconvert._native's quantize_into,
dequantize_into and block_info, and the block-code functions of GPTQ inside the blocks
(block_codes, block_set_codes, quantize_part_weighted, row_sigma2_into, gptq_block_columns) and
the Hessian's bfloat16 Gram kernel (gram_bf16_upper, where the CPU has AVX-512 BF16) —
block type ids valid and not, buffers of every dtype, length,
contiguity, alignment and writability (numpy arrays, bytes, bytearray, memoryviews, other objects),
row counts and lengths from 0 to 2^64, thread counts from -2^31 to 2^31-1, importance weights of
any length with NaN and Inf, random block bytes to dequantize.

Every call must raise ValueError, TypeError, OverflowError or FloatingPointError (a non-finite
source value), or succeed; a success is checked: the destination is written only inside its own
bytes (guard bytes on both sides stay as they were), and quantize_into's output does not depend on
the thread count. A crash or an out-of-bounds access kills the process: the calls run in a child
process that logs each call before making it, so the test names the call that killed it.

Self-contained for an AddressSanitizer build: it imports only qconvert._native, numpy and pytest
(the child runs this file), and `python tests/fuzz/test_native_binding.py CALLS SEED` runs the
calls in-process, e.g. under `LD_PRELOAD=$(gcc -print-file-name=libasan.so)`.
"""

import random
import subprocess
import sys

import numpy as np
import pytest

CALLS = 4000
EXPECTED = (ValueError, TypeError, OverflowError, FloatingPointError)
GUARD = 64  # bytes of a known pattern on each side of a destination
_INT_EXTREMES = (0, 1, -1, 2, 7, 31, 32, 33, 255, 256, 257, 2**31 - 1, 2**31, -(2**31), 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**64))


def _guarded(n_bytes: int, dtype, align: int, rng: np.random.Generator):
    """A writable array of n_bytes (as dtype) inside a larger buffer with GUARD pattern bytes around it;
    aligned to `align` bytes, or deliberately misaligned by a byte when align is 0."""
    raw = np.empty(n_bytes + 2 * GUARD + 64, np.uint8)
    raw[:] = rng.integers(0, 256, raw.size, dtype=np.uint8)
    base = raw.ctypes.data
    start = GUARD + (-(base + GUARD) % 64) + (1 if align == 0 else 0)
    itemsize = np.dtype(dtype).itemsize
    view = raw[start : start + n_bytes - n_bytes % itemsize].view(dtype)
    return raw, view, start


def _guards_intact(raw: np.ndarray, before: np.ndarray, start: int, n_bytes: int) -> bool:
    return bool((raw[:start] == before[:start]).all() and (raw[start + n_bytes :] == before[start + n_bytes :]).all())


class Fuzzer:
    def __init__(self, seed: int):
        import qconvert._native as native

        self.native = native
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.types = list(native.block_types())
        self.info = {t: native.block_info(t) for t in self.types}
        self.succeeded = 0  # quantize_into and dequantize_into calls that succeeded (and were checked)

    # --- argument generators -------------------------------------------------------------------------

    def type_id(self):
        r = self.rng.random()
        if r < 0.8:
            return self.rng.choice(self.types)
        if r < 0.95:
            return self.rng.choice((-1, 0, 1, 2, 3, 4, 5, 6, 9, 13, 16, 24, 30, 99, 2**31 - 1, -(2**31)))
        return self.rng.choice((2**31, 2**63, -(2**40), "q4_0", 1.5, None, True, [8]))

    def count(self, right: int):
        r = self.rng.random()
        if r < 0.8:
            return right
        if r < 0.9:
            return max(0, right + self.rng.choice((-32, -1, 1, 32, 256)))
        if r < 0.97:
            return self.rng.choice(_INT_EXTREMES)
        return self.rng.choice((1.0, "8", None, np.int64(right)))

    def threads(self):
        return self.rng.choice((1, 1, 2, 3, 4, 0, -1, 16, 255, 256, 257, 4096, 2**31 - 1, -(2**31))) if self.rng.random() < 0.97 else self.rng.choice((2**31, 1.0, None))

    def buffer(self, n_items: int, dtype, writable: bool = False):
        """Mostly a fitting buffer of `dtype`; else one of another dtype, length, layout or kind. Returns
        (object passed, (raw, before, start, n_bytes) when it is a guarded writable array else None)."""
        r = self.rng.random()
        n_items = max(0, n_items)
        if r < 0.75 or (writable and r < 0.85):
            n = n_items if self.rng.random() < 0.9 else max(0, n_items + self.rng.choice((-1, 1, -8, 8)))
            align = 0 if self.rng.random() < 0.05 else 64
            raw, view, start = _guarded(n * np.dtype(dtype).itemsize, dtype, align, self.np_rng)
            if dtype == np.float32 and not writable:
                view[:] = self.np_rng.standard_normal(view.size).astype(np.float32) * self.rng.choice((1, 1e-30, 1e30))
                if self.rng.random() < 0.05 and view.size:
                    view[self.rng.randrange(view.size)] = self.rng.choice((np.nan, np.inf, -np.inf))
            elif dtype == np.float16 and not writable:
                view[:] = self.np_rng.standard_normal(view.size).astype(np.float16)
                if self.rng.random() < 0.1 and view.size:
                    view.view(np.uint16)[self.rng.randrange(view.size)] = self.rng.choice((0x7C00, 0xFC00, 0x7E00, 0xFFFF, 0x0001))
            if not writable and self.rng.random() < 0.1:
                view.flags.writeable = False
            return view, (raw, raw.copy(), start, view.nbytes) if writable else None
        n = max(1, n_items)
        kind = self.rng.choice(("dtype", "strided", "2d-transposed", "bytes", "bytearray", "memoryview", "readonly", "object", "empty", "big-endian"))
        if kind == "dtype":
            other = self.rng.choice((np.float64, np.float16, np.float32, np.int32, np.uint8, np.int8, np.uint16, np.int64, np.complex64, np.bool_))
            return np.zeros(n, other), None
        if kind == "strided":
            return np.zeros(2 * n, dtype)[::2], None
        if kind == "2d-transposed":
            return np.zeros((2, n), dtype).T, None
        if kind == "bytes":
            return bytes(n * np.dtype(dtype).itemsize), None
        if kind == "bytearray":
            return bytearray(n * np.dtype(dtype).itemsize), None
        if kind == "memoryview":
            a = np.zeros(n, dtype)
            return (memoryview(a) if self.rng.random() < 0.5 else memoryview(a).cast("B")), None
        if kind == "readonly":
            a = np.zeros(n, dtype)
            a.flags.writeable = False
            return a, None
        if kind == "empty":
            return np.zeros(0, dtype), None
        if kind == "big-endian":
            return np.zeros(n, np.dtype(dtype).newbyteorder(">")), None
        return self.rng.choice((None, 7, "abc", [1.0] * 4, object())), None

    def _block(self, t) -> tuple[int, int]:
        """(block_elems, block_bytes) of a valid type id; a Q4_0-like block for any other argument."""
        return self.info[t][1:] if isinstance(t, int) and t in self.info else (32, 18)

    # --- the calls -----------------------------------------------------------------------------------

    def quantize(self, log) -> None:
        t = self.type_id()
        elems, block_bytes = self._block(t)
        rows, per_row = self.rng.randint(0, 4), elems * self.rng.randint(1, 2)
        n_rows, n_per_row = self.count(rows), self.count(per_row)
        f16 = self.rng.random() < 0.3
        src, _ = self.buffer(rows * per_row, np.float16 if f16 else np.float32)
        dst, guard = self.buffer(rows * per_row // elems * block_bytes, np.uint8, writable=True)
        threads = self.threads()
        args = [t, src, n_rows, n_per_row, dst, threads]
        r = self.rng.random()
        if r < 0.4:
            imp, _ = self.buffer(per_row, np.float32)
            if isinstance(imp, np.ndarray) and imp.dtype == np.float32 and imp.size and imp.flags.writeable and self.rng.random() < 0.5:
                imp[:] = np.abs(imp)
            args.append(imp)
            if self.rng.random() < 0.5:
                args.append(self.rng.choice((f16, f16, not f16, 1, 0, "yes", None)))
        elif r < 0.6:
            args += [None, f16]
        log(f"quantize_into{_shown(args)}")
        if not self._call(self.native.quantize_into, args, guard):
            return
        # a success: the same bytes with one thread as with the threads asked for
        if isinstance(threads, int) and threads != 1 and isinstance(dst, np.ndarray):
            again = np.zeros_like(dst)
            args[4], args[5] = again, 1
            self.native.quantize_into(*args)
            assert (again == dst).all(), f"quantize_into gives other bytes with {threads} threads than with one"

    def dequantize(self, log) -> None:
        t = self.type_id()
        elems, block_bytes = self._block(t)
        n = elems * self.rng.randint(0, 3)
        src = self._random_bytes(self.buffer(n // elems * block_bytes, np.uint8)[0], 256)  # random blocks: any scale, any index
        dst, guard = self.buffer(n, np.float32, writable=True)
        args = [t, src, self.count(n), dst]
        log(f"dequantize_into{_shown(args)}")
        self._call(self.native.dequantize_into, args, guard)

    def block_info(self, log) -> None:
        t = self.type_id()
        log(f"block_info({t!r})")
        try:
            name, elems, nbytes = self.native.block_info(t)
        except EXPECTED:
            return
        assert isinstance(name, str) and elems > 0 and nbytes > 0

    def codes(self, log) -> None:
        t = self.type_id()
        elems, block_bytes = self._block(t)
        n = elems * self.rng.randint(0, 3)
        blocks = self._random_bytes(self.buffer(n // elems * block_bytes, np.uint8)[0], 256)
        if self.rng.random() < 0.5:
            outs = [self.buffer(n, dt, writable=True) for dt in (np.uint8, np.float32, np.float32)]
            args = [t, blocks, self.count(n), *(o for o, _ in outs)]
            log(f"block_codes{_shown(args)}")
            self._call(self.native.block_codes, args, None)
            for _, guard in outs:
                self._check_guard("block_codes", guard)
        else:
            codes = self._random_bytes(self.buffer(n, np.uint8)[0], self.rng.choice((4, 8, 16, 32, 64, 256)))
            target, guard = self.buffer(n // elems * block_bytes, np.uint8, writable=True)
            args = [t, target, self.count(n), codes]
            log(f"block_set_codes{_shown(args)}")
            self._call(self.native.block_set_codes, args, guard)

    def part(self, log) -> None:
        t = self.rng.choice((2, 3, 6, 7)) if self.rng.random() < 0.8 else self.type_id()
        elems, block_bytes = self._block(t)
        rows, n = self.rng.randint(0, 3), elems * self.rng.randint(1, 3)
        src, _ = self.buffer(rows * n, np.float32)
        if self.rng.random() < 0.3:
            out, guard = self.buffer(rows, np.float32, writable=True)
            args = [src, self.count(rows), self.count(n), out]
            log(f"row_sigma2_into{_shown(args)}")
            self._call(self.native.row_sigma2_into, args, guard)
            return
        dst, guard = self.buffer(rows * (n // elems) * block_bytes, np.uint8, writable=True)
        imp, _ = self.buffer(n, np.float32)
        sigma2, _ = self.buffer(rows, np.float32)
        args = [t, src, self.count(rows), self.count(n), dst, imp, sigma2]
        log(f"quantize_part_weighted{_shown(args)}")
        self._call(self.native.quantize_part_weighted, args, guard)

    def columns(self, log) -> None:
        m, n_out = self.rng.randint(0, 5), self.rng.randint(0, 9)
        w, w_guard = self.buffer(m * n_out, np.float32, writable=True)
        err, err_guard = self.buffer(m * n_out, np.float32, writable=True)
        codes, codes_guard = self.buffer(m * n_out, np.uint8, writable=True)
        inputs = [self.buffer(k, np.float32)[0] for k in (m * m, m, m * n_out, m * n_out, m * n_out)]  # hinv, inv_diag, s, o, fit_w
        zero, max_code = self.rng.choice((0, 4, 8, 16, 32, 128, -1, 2**31 - 1)), self.rng.choice((3, 7, 15, 31, 63, 255, 256, -1, 2**31 - 1))
        args = [w, err, inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], codes, self.count(m), self.count(n_out), zero, max_code]
        log(f"gptq_block_columns{_shown(args)}")
        self._call(self.native.gptq_block_columns, args, w_guard)
        self._check_guard("gptq_block_columns", err_guard)
        self._check_guard("gptq_block_columns", codes_guard)

    def gram(self, log) -> None:
        n, d = self.rng.randint(0, 5), self.rng.randint(0, 40)
        x, _ = self.buffer(n * d, np.uint16)
        h, guard = self.buffer(d * d, np.float32, writable=True)
        args = [x, self.count(n), self.count(d), h, self.threads()]
        log(f"gram_bf16_upper{_shown(args)}")
        self._call(self.native.gram_bf16_upper, args, guard)

    def _random_bytes(self, buf, high: int):
        """buf, filled with random values below `high` when it is a fitting writable uint8 array."""
        if isinstance(buf, np.ndarray) and buf.dtype == np.uint8 and buf.ndim == 1 and buf.flags.writeable:
            buf[:] = self.np_rng.integers(0, high, buf.size, dtype=np.uint8)
        return buf

    def _check_guard(self, name: str, guard) -> None:
        if guard is not None:
            raw, before, start, n_bytes = guard
            assert _guards_intact(raw, before, start, n_bytes), f"{name} wrote outside its destination"

    def _call(self, fn, args, guard) -> bool:
        """Whether the call succeeded; an expected exception is False, anything else fails."""
        try:
            result = fn(*args)
        except EXPECTED:
            ok = False
        else:
            assert result is None, result
            ok = True
        self.succeeded += ok
        self._check_guard(fn.__name__, guard)
        return ok

    def run(self, n: int, log) -> dict:
        ops = ["quantize", "quantize", "quantize", "dequantize", "dequantize", "block_info", "codes", "part", "columns"]
        ops += ["gram"] if self.native.gram_bf16_supported() else []  # elsewhere it raises RuntimeError, always
        counted_as = {"quantize": "quantize_into", "dequantize": "dequantize_into"}
        outcomes = {counted_as.get(op, op): 0 for op in ops}
        for _ in range(n):
            op = self.rng.choice(ops)
            getattr(self, op)(log)
            outcomes[counted_as.get(op, op)] += 1
        return {**outcomes, "succeeded": self.succeeded}


def _shown(args) -> str:
    def one(a):
        if isinstance(a, np.ndarray):
            return f"ndarray({a.dtype.str}, shape={a.shape}, contiguous={a.flags.c_contiguous}, writeable={a.flags.writeable}, addr%64={a.ctypes.data % 64})"
        if isinstance(a, (bytes, bytearray, memoryview)):
            return f"{type(a).__name__}(len={len(a)})"
        return repr(a)

    return "(" + ", ".join(one(a) for a in args) + ")"


def main(calls: int, seed: int, log_path: str | None = None) -> None:
    log_file = open(log_path, "w") if log_path else None

    def log(line: str) -> None:
        if log_file:
            log_file.seek(0)
            log_file.write(line + "\n")
            log_file.truncate()
            log_file.flush()

    print(Fuzzer(seed).run(calls, log))


@pytest.mark.parametrize("seed", [0, 1])
def test_random_calls_raise_or_succeed(seed, tmp_path):
    log = tmp_path / "current-call.txt"
    proc = subprocess.run([sys.executable, __file__, str(CALLS), str(seed), str(log)], capture_output=True, text=True, timeout=300)
    current = log.read_text() if log.is_file() else "(none)"
    assert proc.returncode == 0, f"exit {proc.returncode} during {current}\n{proc.stderr[-3000:]}"
    counts = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's dict
    succeeded = counts.pop("succeeded")
    assert sum(counts.values()) == CALLS and min(counts.values()) > 0
    assert succeeded > CALLS // 10, counts  # the arguments reach the kernels, not only the checks


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else CALLS, int(sys.argv[2]) if len(sys.argv) > 2 else 0, sys.argv[3] if len(sys.argv) > 3 else None)
