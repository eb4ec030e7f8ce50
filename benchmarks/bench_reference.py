"""Reference models: importing the 57K braincharts archive and z-scoring many scans.

Prints, with the goal of issue 14 and the ratio figure / goal (below 1 meets it):
  * import of ``lifespan_57K_82sites.zip`` (restricted unpickling of 376 pickles, one
    Cholesky inverse per measure) and saving it in morphml's format; goal <= 20 s;
  * loading the saved reference;
  * z-scores of N scans x 187 features (default 10,000), scans spread over known sites and one
    new site (``ReferenceModel.zscores``, all features at once); goal <= 5 s;
  * the same z-scores the direct way (full 92-column design rows, ``diag(phi S phi')`` per
    feature as ``((phi @ S) * phi).sum(1)``) as the baseline, with the ratio baseline / morphml;
  * ``ReferenceDeviations`` fit (braincharts adaptation of the new site) + transform.

Usage: python benchmarks/bench_reference.py [--scans N] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from morphml.reference import ReferenceDeviations, ReferenceModel, import_braincharts
from morphml.reference._basis import common_design

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _best(func: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def _direct_z(ref: ReferenceModel, X: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
    """The baseline: full design rows, one matrix product per feature."""
    age = meta["age"].to_numpy(np.float64)
    common = common_design(age, meta["sex"].to_numpy(np.float64), ref.knots)
    codes = ref.site_codes(meta["site"].to_numpy())
    onehot = np.zeros((len(age), len(ref.sites)))
    onehot[codes >= 0, codes[codes >= 0]] = 1.0
    phi = np.column_stack([common[:, :3], onehot, common[:, 3:]])
    z = np.empty_like(X)
    for j in range(len(ref.features)):
        mean = phi @ ref.coef[j]
        var = ref.noise_var[j] + np.sum((phi @ ref.cov[j]) * phi, axis=1)
        eps, delta = ref.warp_params[j]
        fy = np.sinh(delta * np.arcsinh(X[:, j]) + eps * delta)
        z[:, j] = (fy - mean) / np.sqrt(var)
    return z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    archive = args.data / "braincharts" / "lifespan_57K_82sites.zip"

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref"
        start = time.perf_counter()
        ref = import_braincharts(archive)
        ref.save(out)
        t_import = time.perf_counter() - start
        t_load = _best(lambda: ReferenceModel.load(out))
    print(
        f"import 57K archive + save   {t_import:7.2f} s   goal <= 20 s   ratio {t_import / 20:.3f}"
    )
    print(f"load saved reference        {t_load:7.2f} s")

    rng = np.random.default_rng(0)
    n = args.scans
    meta = pd.DataFrame(
        {
            "age": rng.uniform(8, 85, n),
            "sex": rng.integers(0, 2, n),
            "site": rng.choice([*ref.sites[:20], "new-site"], n),
            "control": rng.integers(0, 2, n),
        }
    )
    mu, sd = ref.predict(meta)
    warped = mu.to_numpy() + sd.to_numpy() * rng.standard_normal(mu.shape)
    values = ref.unwarp_values(warped, np.arange(len(ref.features)))
    X = pd.DataFrame(values, columns=ref.features)

    t_z = _best(lambda: ref.zscores(X, meta))
    t_direct = _best(lambda: _direct_z(ref, values, meta), repeat=1)
    z = ref.zscores(X, meta).to_numpy()
    gap = float(np.max(np.abs(z - _direct_z(ref, values, meta))))
    label = f"z-scores {n} x {len(ref.features)}"
    print(f"{label:<27} {t_z:7.2f} s   goal <= 5 s    ratio {t_z / 5:.3f}")
    print(
        f"{'  baseline (full design)':<27} {t_direct:7.2f} s   baseline / morphml "
        f"{t_direct / t_z:.1f}x   max |difference| {gap:.1e}"
    )
    Xm = pd.concat([X, meta.add_prefix("meta:")], axis=1)
    dev = ReferenceDeviations(ref)
    t_dev = _best(lambda: dev.fit(Xm).transform(Xm))
    print(f"{'ReferenceDeviations fit+transform':<27} {t_dev:7.2f} s")


if __name__ == "__main__":
    main()
