"""The two batch notebooks chained as tasks of one workflow (``nf.notebook``).

    python example_notebooks/batch/pipeline.py

prep.ipynb runs first; train.ipynb runs twice (two alphas) on prep's outputs, each in its
own kernel, at the same time.  Run it again and everything is served from the cache; edit
train.ipynb and only the two train runs repeat.
"""

from pathlib import Path

import nbflow as nf

HERE = Path(__file__).parent

with nf.Workflow("batch-pipeline") as wf:
    prep = nf.notebook(HERE / "prep.ipynb", parameters={"n_rows": 400, "seed": 3}, outputs=["train", "test"])
    fits = [nf.notebook(HERE / "train.ipynb", parameters={"prep": prep, "alpha": a}, outputs=["r2"])
            for a in (0.1, 10.0)]

if __name__ == "__main__":
    run = wf.run()
    for ref, alpha in zip(fits, (0.1, 10.0), strict=True):
        print(f"alpha={alpha}: r2={run[ref]['r2']:.4f}")
    print(run.tasks[["key", "state", "cached", "duration_s"]].to_string(index=False))
