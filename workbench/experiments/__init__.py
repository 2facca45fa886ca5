"""Code that combines the layers below it into the jobs users run.

* `rankers`: notebook 05's ranker experiments and the MovieLens benchmark;
* `tuning`: every ranker's hyperparameters chosen on a validation split of train (optuna);
* `recommend`: `workbench recommend` (split, fit, score, write metrics);
* `system_run`: notebook 07's two-stage system and its report sections.
"""
