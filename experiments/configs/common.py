"""Fields shared by every experiment config, with the paper's protocol as defaults.

Liao, Leibo & Poggio (AAAI 2016) train 65 epochs with batch 100 and a base learning rate of
5e-4 (divided by 10 after epoch 50 and by 100 after epoch 60), run every {condition, dataset}
cell with the base rate times 100, 10, 1, 0.1 and 0.01, and report the lowest test error over
all epochs of the 5 runs. Fields marked "not in the paper" are choices it leaves open.
"""

import ml_collections

# Experiment A's conditions (Table 2), in the paper's column order.
EXPERIMENT_A_CONDITIONS = (
    "SGD",
    "BM",
    "BN",
    "BN+BM",
    "uSF",
    "NuSF",
    "uSF+BM",
    "uSF+BN",
    "uSF+BN+BM",
    "brSF+BN+BM",
    "frSF+BN+BM",
)

# The paper's 15 datasets, in the row order of its tables.
PAPER_DATASETS = (
    "mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "stl10",
    "caltech101",
    "caltech256_101",
    "icub",
    "flowers17",
    "flowers102",
    "pubfig83_id",
    "sufr_w_id",
    "lfw_id",
    "scene67",
    "timit80",
)


def base_config() -> ml_collections.ConfigDict:
    """Return the paper's protocol; experiment configs set `experiment`, datasets, conditions."""
    config = ml_collections.ConfigDict()
    config.experiment = ""
    # Which paper table the report sets the results beside: A, B, C1, C2, manhattan, batch.
    config.paper_table = "A"
    config.datasets = ("mnist",)
    config.conditions = EXPERIMENT_A_CONDITIONS

    config.epochs = 65
    config.batch_size = 100
    config.base_learning_rate = 5e-4
    config.lr_multipliers = (100.0, 10.0, 1.0, 0.1, 0.01)
    # 1-based epochs after which the rate is multiplied by the next factor.
    config.lr_boundaries = (50, 60)
    config.lr_factors = (1.0, 0.1, 0.01)
    config.momentum = 0.9
    # Not in the paper: MatConvNet's cnn_train default, applied to kernels only.
    config.weight_decay = 5e-4
    # Not in the paper: the sign of a zero gradient component in Batch Manhattan (0: no push).
    config.sign_of_zero = 0.0
    # uSF+BM also runs batch 100 for 3 epochs, then 500, and keeps the better run.
    config.try_batch_schedule = True

    # Not in the paper: "normal_0.01" (0.01 * randn, MatConvNet's examples) or "he".
    config.init = "normal_0.01"
    # Not in the paper: "standardize", "mean_image" or "unit" (see asym_jax.data).
    config.normalization = "standardize"
    # Not in the paper: "squash" (resize the whole image) or "center_crop" for the 119x119
    # network's datasets.
    config.resize_mode = "squash"
    config.rndf_sigma = 0.05
    # Not in the paper: the feedback sign of a zero weight for uSF, NuSF, brSF and frSF.
    config.feedback_sign_of_zero = 1.0
    # Not in the paper: BN running-average momentum, epsilon and evaluation statistics
    # ("running" averages or "batch" statistics of the evaluated batch).
    config.bn_momentum = 0.9
    config.bn_epsilon = 1e-5
    config.bn_eval_statistics = "running"
    # Not in the paper: keep the bias of layers followed by BN (it cancels in training).
    config.bias_with_bn = False
    # Not in the paper: average pools divide by the window's cells inside the input
    # (MatConvNet) unless this is True.
    config.avg_pool_count_padding = False
    # Implementations with the same gradients. Conv: "xla_per_run" (fastest on CPU), "patches",
    # "lax_patches" or "xla". Pooling: "slices" or "reduce_window", which differ only in how
    # tied maxima share the gradient.
    config.conv_impl = "xla_per_run"
    config.pool_impl = "slices"
    # How a step trains the runs of a sweep: "vmap" (batched), "map" (one after another in
    # the same program) or "auto" (map on one CPU device, else vmap). Same results.
    config.run_loop = "auto"

    # Repeats every learning rate with this many seeds (initialisation and feedback draws).
    config.num_seeds = 1
    config.seed = 0
    # "test": the paper's rule (lowest test error over epochs and runs). "validation": pick
    # the run and epoch on a held-out fraction of the training data, report the test error.
    config.selection = "test"
    config.validation_fraction = 0.1

    # A run whose training loss per example over the last quarter of an epoch exceeds this
    # times ln(classes) (the loss of a uniform guess) is marked diverged from that epoch on.
    config.loss_explosion_factor = 100.0
    # A run predicting one class for at least this fraction of the test set, from some epoch
    # to the end, is marked collapsed.
    config.collapse_fraction = 0.95

    config.data_dir = ""
    config.cache_dir = ""
    # 0 keeps every training example; otherwise a seeded subset of this size.
    config.max_train_examples = 0
    config.eval_batch_size = 1000
    # "i/n": this process runs cells i, i+n, i+2n... of the grid.
    config.grid_shard = "0/1"
    # Call jax.distributed.initialize() first, so the runs of a sweep are sharded over the
    # devices of several hosts (every host runs the same command).
    config.distributed = False
    return config


def parse_arguments(arg: str | None) -> dict[str, str]:
    """Parse "key=value,key=value" from `--config=file.py:arg`; lists use ";" between items."""
    if not arg:
        return {}
    parsed = {}
    for item in arg.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"Invalid config argument {item!r} in {arg!r}: expected key=value pairs "
                "separated by commas, e.g. 'dataset=mnist5k,conditions=SGD;uSF+BN'."
            )
        parsed[key.strip()] = value.strip()
    return parsed


def apply_arguments(config: ml_collections.ConfigDict, arg: str | None) -> None:
    """Set `datasets` / `conditions` from `dataset=...`/`conditions=...` arguments."""
    arguments = parse_arguments(arg)
    known = {"dataset", "datasets", "condition", "conditions"}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(
            f"Unknown config argument(s) {unknown}; valid: dataset, conditions. Set other "
            "fields with --config.FIELD=VALUE."
        )
    for key in ("dataset", "datasets"):
        if key in arguments:
            config.datasets = tuple(arguments[key].split(";"))
    for key in ("condition", "conditions"):
        if key in arguments:
            config.conditions = tuple(arguments[key].split(";"))


def paper_conditions(table_file: str) -> tuple[str, ...]:
    """Return the condition labels of a packaged paper table, in its column order."""
    from asym_jax import tables

    return tuple(tables.paper_table(table_file).columns)


def paper_datasets(table_file: str) -> tuple[str, ...]:
    """Return the registry names of a paper table's rows, in its row order."""
    from asym_jax import data, tables

    by_label = {spec.label: name for name, spec in data.DATASETS.items() if name != "mnist5k"}
    return tuple(by_label[row] for row in tables.paper_table(table_file).rows)


def paper_experiment(experiment: str, table_file: str, arg: str | None):
    """Return the config of a paper experiment: every row and column of its table."""
    config = base_config()
    config.experiment = experiment
    config.paper_table = experiment
    config.datasets = paper_datasets(table_file)
    config.conditions = paper_conditions(table_file)
    apply_arguments(config, arg)
    return config
