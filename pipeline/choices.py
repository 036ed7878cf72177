"""Every fixed set of values an option takes, in one place: the modules check values against these tuples and
the command line builds its option types from them, so the two cannot drift apart.

A module of its own, without imports, so that ``pipeline --help`` shows the choices without loading torch.
Submission formats are :data:`pipeline.predict.formats.FORMATS` and sources :data:`pipeline.data.sources.SOURCES`.
"""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PARALLEL = ("auto", "folds", "ddp")  # how several training processes share a run
TRACKERS = ("auto", "none", "tensorboard", "mlflow")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle")
AUGMENT_PRESETS = ("none", "light", "strong")
# test-time augmentation: each policy averages the image and these views of it (pipeline.train.task.view_of)
TTA_POLICIES = {"none": (), "hflip": ("hflip",), "flips": ("hflip", "vflip", "rot180"),
                "rot": ("hflip", "vflip", "rot90", "rot180", "rot270")}
TTA = tuple(TTA_POLICIES)
ENSEMBLE_METHODS = ("fit", "mean")
CALIBRATIONS = ("auto", "none", "temperature")
RUN_SORTS = ("logloss", "accuracy", "auc", "time", "created", "name")
