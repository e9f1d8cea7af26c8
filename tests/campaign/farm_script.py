"""Driven by test_farm.py under `mpirun -n 2`: map a task over items, or fail on purpose."""

import json
import os
import sys
import time

from csp.campaign.farm import Farm


def square_with_rank(x):
    time.sleep(0.002 * (x % 3))
    return (x * x, int(os.environ.get("PMI_RANK", "0")))


def fail_on_worker(x):
    if int(os.environ.get("PMI_RANK", "0")) != 0 and x >= 3:
        raise ValueError(f"injected failure at item {x}")
    time.sleep(0.05)
    return x


def big_payload(x):
    """Large task and result messages (beyond MPI's eager limit) with work on both ranks."""
    arr, k = x
    time.sleep(0.02)
    return (float(arr.sum()) + k, arr * 2.0)


def fail_on_master(x):
    if int(os.environ.get("PMI_RANK", "0")) == 0:
        raise ValueError(f"injected failure at item {x}")
    time.sleep(0.05)
    return x


def fail_anywhere(x):
    if x == 5:
        raise ValueError("injected failure at item 5")
    time.sleep(0.05)
    return x


def exit_on_worker(x):
    """A worker that vanishes without a word (a C library calling exit(), the OOM killer)."""
    if int(os.environ.get("PMI_RANK", "0")) != 0 and x == 3:
        os._exit(3)
    time.sleep(0.05)
    return x


def main(mode: str, log_dir: str | None = None) -> int:
    farm = Farm()
    if not farm.is_master:
        farm.serve()
        return 0
    if log_dir:
        farm.set_log_dir(log_dir)
    try:
        if mode == "big":
            import numpy as np

            items = [(np.full(200_000, float(k)), k) for k in range(12)]
            out = farm.map(big_payload, items)
            farm.stop()
            ok = all(o[0] == 200_000 * k + k and o[1][0] == 2.0 * k for k, o in enumerate(out))
            print(json.dumps({"size": farm.size, "ok": ok}))
            return 0
        fn = {"ok": square_with_rank, "fail_worker": fail_on_worker, "fail_any": fail_anywhere,
              "fail_master": fail_on_master, "exit_worker": exit_on_worker}[mode]
        out = farm.map(fn, range(40))
        farm.stop()
    except Exception as exc:
        farm.abort(f"csp: internal error on MPI rank 0: {type(exc).__name__}: {exc}")
        return 1
    print(json.dumps({"size": farm.size, "results": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
