"""Quickstart as a script: generate a housing data set, clean it, build features, fit and
evaluate a linear model — with independent steps running in parallel.

Run with ``make example`` (or ``.venv/bin/python example_notebooks/quickstart.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import nbflow as nf


@nf.task
def generate(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.normal(120, 35, n).clip(25, 400)
    rooms = np.maximum(1, (area / 30 + rng.normal(0, 1, n)).round())
    age = rng.integers(0, 100, n).astype(float)
    district = rng.choice(["north", "south", "east", "west"], n, p=[0.3, 0.3, 0.2, 0.2])
    premium = pd.Series(district).map({"north": 40_000, "south": 0, "east": 15_000, "west": 25_000})
    price = 2_500 * area + 8_000 * rooms - 900 * age + premium.to_numpy() + rng.normal(0, 20_000, n)
    df = pd.DataFrame({"area": area, "rooms": rooms, "age": age, "district": district, "price": price})
    # real data is messy: some missing ages and a few impossible prices
    df.loc[rng.choice(n, n // 50, replace=False), "age"] = np.nan
    df.loc[rng.choice(n, n // 200, replace=False), "price"] = -1
    return df


@nf.task
def clean(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["price"] > 0].copy()
    df["age"] = df["age"].fillna(df["age"].median())
    return df.reset_index(drop=True)


@nf.task
def split(df: pd.DataFrame, test_fraction: float, seed: int) -> dict:
    test = df.sample(frac=test_fraction, random_state=seed)
    return {"train": df.drop(test.index), "test": test}


@nf.task
def features(df: pd.DataFrame) -> pd.DataFrame:
    x = pd.get_dummies(df[["area", "rooms", "age", "district"]], columns=["district"], dtype=float)
    x["intercept"] = 1.0
    return x


@nf.task
def fit(x: pd.DataFrame, y: pd.Series) -> pd.Series:
    coef, *_ = np.linalg.lstsq(x.to_numpy(), y.to_numpy(), rcond=None)
    return pd.Series(coef, index=x.columns)


@nf.task
def evaluate(coef: pd.Series, x: pd.DataFrame, y: pd.Series) -> dict:
    pred = x[coef.index].to_numpy() @ coef.to_numpy()
    rmse = float(np.sqrt(np.mean((pred - y.to_numpy()) ** 2)))
    return {"rmse": rmse, "r2": float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))}


@nf.task
def target(parts: dict, which: str) -> pd.Series:
    return parts[which]["price"]


@nf.task
def part(parts: dict, which: str) -> pd.DataFrame:
    return parts[which]


def main() -> nf.Run:
    with nf.Workflow("quickstart") as wf:
        raw = generate(20_000, seed=1)
        parts = split(clean(raw), 0.2, seed=2)
        x_train, x_test = features(part(parts, "train")), features(part(parts, "test"))
        y_train, y_test = target(parts, "train"), target(parts, "test")
        coef = fit(x_train, y_train)
        score = evaluate(coef, x_test, y_test)
    run = wf.run()
    print(run.tasks[["key", "state", "duration_s", "executor"]].to_string(index=False))
    print(f"\nrun {run.id}: {run.status} in {run.duration_s:.2f} s")
    print("coefficients:\n" + run[coef].round(1).to_string())
    print(f"test RMSE {run[score]['rmse']:,.0f}, R² {run[score]['r2']:.3f}")
    assert run[score]["r2"] > 0.8, "the model should explain most of the price"
    return run


if __name__ == "__main__":
    main()
