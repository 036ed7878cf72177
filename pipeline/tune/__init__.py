"""``pipeline tune``: a hyper-parameter search on Optuna whose trials are runs."""
