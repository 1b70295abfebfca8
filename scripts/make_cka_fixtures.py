#!/usr/bin/env python3
"""Writes tests/fixtures/cka/: small feature .npy files, the linear CKA of each
pair computed directly in NumPy float64 (expected.json), and .npy files that
NumPy writes in every header version or that repshare must reject.

The reference below is the textbook formula on the raw Gram matrices (explicit
centring matrix H, explicit diagonal zeroing), independent of repshare's
streaming, pre-centred implementation.

Usage: .venv/bin/python scripts/make_cka_fixtures.py
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "cka")


def hsic_biased(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K, L):
    n = K.shape[0]
    K = K.copy()
    L = L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 * (one @ K @ L @ one) / (n - 2)) / (n * (n - 3))


def batches(n, b):
    """Consecutive minibatches of b examples; the last n % b join the final one."""
    count = n // b
    return [(i * b, n if i == count - 1 else (i + 1) * b) for i in range(count)]


def cka(X, Y, estimator, batch_size=0):
    X = X.reshape(X.shape[0], -1).astype(np.float64)
    Y = Y.reshape(Y.shape[0], -1).astype(np.float64)
    K, L = X @ X.T, Y @ Y.T
    if estimator == "biased":
        return hsic_biased(K, L) / np.sqrt(hsic_biased(K, K) * hsic_biased(L, L))
    spans = batches(K.shape[0], batch_size) if batch_size else [(0, K.shape[0])]
    kl = kk = ll = 0.0
    for b0, b1 in spans:
        Kb, Lb = K[b0:b1, b0:b1], L[b0:b1, b0:b1]
        kl += hsic_unbiased(Kb, Lb)
        kk += hsic_unbiased(Kb, Kb)
        ll += hsic_unbiased(Lb, Lb)
    return kl / np.sqrt(kk * ll)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240531)
    cases = {}

    def case(name, X, Y, batch_size):
        np.save(os.path.join(OUT, name + "_x.npy"), X)
        np.save(os.path.join(OUT, name + "_y.npy"), Y)
        cases[name] = {
            "x": name + "_x.npy", "y": name + "_y.npy", "n": int(X.shape[0]),
            "batch_size": batch_size,
            "biased": cka(X, Y, "biased"),
            "unbiased": cka(X, Y, "unbiased"),
            "minibatch": cka(X, Y, "unbiased", batch_size),
        }

    # D >> N: a 4-d activation map against a nonlinear projection of it.
    X = rng.standard_normal((16, 8, 16, 16)).astype(np.float32)
    W = rng.standard_normal((2048, 600)) / np.sqrt(2048)
    Y = np.tanh(X.reshape(16, -1) @ W) + 0.5 * rng.standard_normal((16, 600))
    case("wide", X, Y.astype(np.float32), 8)

    # N >> D, float64 on one side; 2000 % 300 = 200 examples join the last batch.
    X = rng.standard_normal((2000, 6)).astype(np.float32)
    Y = X[:, :4] @ rng.standard_normal((4, 4)) + 0.8 * rng.standard_normal((2000, 4))
    case("tall", X, Y, 300)

    # Post-ReLU-like features with large means, which cancel when centring.
    Z = rng.standard_normal((50, 40))
    X = np.maximum(Z, 0) + 5.0
    Y = (np.maximum(Z[:, :30] @ rng.standard_normal((30, 30)), 0) + 3.0).astype(np.float32)
    case("offset", X, Y, 12)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
        f.write("\n")

    # The header versions NumPy writes; values are 0.5 * index.
    values = (np.arange(12) * 0.5).reshape(3, 4)
    for version, dtype in (((1, 0), np.float64), ((2, 0), np.float32), ((3, 0), np.float32)):
        with open(os.path.join(OUT, "v%d.npy" % version[0]), "wb") as f:
            np.lib.format.write_array(f, values.astype(dtype), version=version)

    # Inputs repshare must reject.
    np.save(os.path.join(OUT, "bad_int64.npy"), np.arange(12, dtype=np.int64).reshape(3, 4))
    np.save(os.path.join(OUT, "bad_bigendian.npy"), values.astype(">f4"))
    np.save(os.path.join(OUT, "bad_fortran.npy"), np.asfortranarray(values.astype(np.float32)))
    path = os.path.join(OUT, "bad_truncated.npy")
    np.save(path, values.astype(np.float32))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 7)
    with open(os.path.join(OUT, "bad_magic.npy"), "w") as f:
        f.write("x,y\n1,2\n")


if __name__ == "__main__":
    main()
