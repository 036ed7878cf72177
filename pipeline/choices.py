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
PSEUDO_THRESHOLD = 0.95  # default: the probability of its predicted class a test photo needs for --pseudo
AVERAGES = ("none", "swa", "soup")  # weight averaging along a fold's epochs (pipeline.train.callbacks.WeightAverage)
# test-time augmentation: each policy averages the image and these views of it (pipeline.compute.views.view_of);
# --tta also takes views joined by "+" (hflip+zoom), and auto: the views that lower the out-of-fold metric
VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270", "zoom", "zoom-hflip")
TTA_POLICIES = {"none": (), "hflip": ("hflip",), "flips": ("hflip", "vflip", "rot180"),
                "rot": ("hflip", "vflip", "rot90", "rot180", "rot270")}
TTA = (*TTA_POLICIES, "auto")
ENSEMBLE_METHODS = ("fit", "mean")
CALIBRATIONS = ("auto", "none", "temperature", "pooled")
RUN_SORTS = ("logloss", "accuracy", "auc", "time", "created", "name")
