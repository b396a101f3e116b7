"""Typed experiment configuration: OmegaConf structured dataclasses + YAML override files.

An experiment file is a small override of a base file, named by the key `_base_` (a path relative
to the file itself; bases may chain). Load order: dataclass defaults <- base(s) <- file <- dotted
command-line overrides (`optim.lr=1e-3`). Unknown keys and values of the wrong type are errors
that name the file and the full key.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videored.models.budget import check_fraction, warn_renamed
from videored.models.methods import METHODS

STAGE_KINDS = ("interpreter", "finetune", "supervised")


@dataclass
class ModelConfig:
    name: str = "timesformer_jointst_base_patch16_224"  # a `videored.models` registry name
    num_classes: int = 400
    img_size: int = 224
    num_frames: int = 8  # video models only; ignored for image models
    depth: Optional[int] = None  # None: the registry default (12 for ViT-B/DeiT)
    groups: int = 1  # D: interpreter groups (video: 1, images: 3)
    threshold: float = 0.5  # token kept when I_i >= threshold (supplement Table 2)
    pretrained_path: Optional[str] = None  # local file only; nothing downloads at run time
    time_embed_resize: str = "linear"  # linear | nearest (TimeSformer's loader) on a frame-count change
    # recompute each block's activations in backward instead of storing them (training memory)
    grad_checkpointing: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # any other constructor argument


@dataclass
class DataConfig:
    kind: str = "video"  # video | image | tensor_file (a .pt of tensors, for tests/debugging)
    root: str = "???"  # video: folder with {train,val,test}.csv; image: ImageFolder root; tensor_file: the .pt
    batch_size: int = 8  # clips per process (per GPU) and step
    # train: clips taken from each decoded video (repeated sampling); the loader reads
    # batch_size / clips_per_video videos a step, an epoch visits every video once
    clips_per_video: int = 1
    num_workers: int = 8
    val_split: Optional[str] = None  # e.g. "val": greedy top-1 on it after every stage
    # video clip sampling (VideoClipDataset)
    sampling_rate: int = 32
    target_fps: int = 30
    train_jitter_scales: list[int] = field(default_factory=lambda: [256, 320])
    num_spatial_crops: int = 1  # val/test views per video during training-time validation
    num_temporal_views: int = 1
    # video reader (videored.data.decoding): auto (the fastest installed: PyAV's selective
    # decode) | pyav | decord | torchcodec; all give the same frames
    decoder: str = "auto"
    backend: Optional[str] = None  # deprecated name of data.decoder (read with a warning)
    # frame sampling convention: videored (fps-aware, centred, clamped) | mmaction (SampleFrames:
    # raw frames exactly sampling_rate apart, looped) | timesformer (linspace; test view at frame 0)
    sampling: str = "videored"
    # Input normalization on [0, 1] pixels; None: the weights' own, recorded when they were
    # loaded (videored.normalization). Set both to override.
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    # train: stop when more than this fraction of an epoch's items needed a substitute for a bad
    # video (None: never); substitutions are counted in summary.json and metrics.jsonl either way
    max_bad_fraction: Optional[float] = 0.05
    loader_timeout: float = 600.0  # s without a batch from the workers (a hung decoder): error; 0: wait forever
    multiprocessing_context: Optional[str] = None  # DataLoader workers: fork | spawn | forkserver; None: platform default


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 2.5e-3
    # lr is multiplied by global_batch / reference_batch when set (linear scaling rule)
    reference_batch: Optional[int] = None
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up, then cosine to min_lr, per stage
    min_lr: float = 0.0
    clip_grad: Optional[float] = None  # max global grad norm; None: no clipping
    interpreter_lr: Optional[float] = None  # lr override for interpreter stages (None: lr)
    # optimizer override for interpreter stages (None: name). Adam's per-parameter step size
    # turns the near-zero-mean REINFORCE gradients of uninformative tokens into a random walk;
    # SGD follows the mean.
    interpreter_optimizer: Optional[str] = None


@dataclass
class ScheduleConfig:
    # Algorithm 1: for every group j in `groups`, these stage kinds in order. `[supervised]` is
    # plain dense finetuning (e.g. a base model for a new dataset); kinds may be combined.
    stages: list[str] = field(default_factory=lambda: ["interpreter", "finetune"])
    groups: Optional[list[int]] = None  # None: all groups 0..D-1
    interpreter_epochs: int = 5
    finetune_epochs: int = 1
    supervised_epochs: int = 0
    max_steps_per_epoch: Optional[int] = None  # cap (smoke runs); None: the whole epoch
    # `supervised` stages train through this reduction instead of densely (EViT's finetune
    # recipe): "evit", or None (dense). kept_ratio: its final kept fraction (the budget
    # vocabulary, models/budget.py; old key `keep_ratio`, still read with a warning);
    # keep_warmup_epochs [start, end]: keep everything until epoch `start` of the stage, then the
    # per-stage keep rate falls from 1 to its target along a cosine until `end` (EViT Sec. 4;
    # its code: [10, 100] of 300 epochs); [0, 0]: the target from the first step.
    reduction: Optional[str] = None
    kept_ratio: float = 1.0
    keep_warmup_epochs: list[float] = field(default_factory=lambda: [0.0, 0.0])
    # learned pruners (reduction spvit / svit, their table entry's train_recipe): per-stage keep
    # targets and loss weights; None: the recipe's (SPViT 0.7^s, 2.0, 0.5, token 0.5; SViT
    # 0.7^(j+1), 4.0, 0, 0); selector_lr_scale: the pruner weights' lr / the stage lr (recipe: 1)
    pruner_targets: Optional[list[float]] = None
    ratio_weight: Optional[float] = None
    distill_weight: Optional[float] = None
    token_distill_weight: Optional[float] = None
    selector_lr_scale: Optional[float] = None


@dataclass
class ReinforceConfig:
    tau: float = 1.5  # penalty for a wrong prediction (Eq. 2)
    squared: bool = True  # reward 1 - k^2 (True) or 1 - k (supplement Table 3)
    # self_critical: A = R(u) - R(u_hat), a greedy pass per step (paper Eq. 3);
    # leave_one_out: A_b = R_b - mean of the other samples' R, no greedy pass (about 2x cheaper)
    baseline: str = "self_critical"
    # decision samples per clip and step: K > 1 repeats each clip K times in the sampled forward
    # (K times its cost) for a K times less noisy policy gradient
    samples: int = 1


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # bf16 autocast on CUDA only; CPU always runs fp32
    log_every: int = 10  # steps between JSONL step rows
    ckpt_every_steps: int = 500  # 0: only at epoch/stage ends
    keep_checkpoints: int = 3  # newest kept in <out>/checkpoints
    max_nonfinite: int = 20  # non-finite losses tolerated (skipped) before the run stops
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class DebugConfig:
    # Hard-exit (os._exit, no cleanup) after this many optimizer steps: simulates a killed job.
    kill_after_steps: Optional[int] = None
    # Preemption tests (videored.engine.fault_injection): sleep pause_write_s seconds at this
    # point (start | middle | end) of the run's first `pause_write_file` write (checkpoint | model).
    pause_write_at: Optional[str] = None
    pause_write_file: str = "checkpoint"
    pause_write_s: float = 5.0


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


def _format(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).splitlines()[0]
    return f"{source}: key '{key}': {first}" if key else f"{source}: {first}"


# Old names of budget keys (models/budget.py's vocabulary): still read, with one warning.
RENAMED_KEYS = {("schedule", "keep_ratio"): "kept_ratio"}


def _rename_old_keys(node: Any, source: str) -> Any:
    """Move each old key of RENAMED_KEYS in `node` to its new name (warns once)."""
    if not isinstance(node, DictConfig):
        return node
    for (section, old), new in RENAMED_KEYS.items():
        sub = node.get(section)
        if isinstance(sub, DictConfig) and old in sub:
            if new in sub:
                raise ConfigError(f"{source}: keys '{section}.{old}' (old name) and "
                                  f"'{section}.{new}' both set; keep '{section}.{new}'")
            warn_renamed(f"{section}.{old}", f"{section}.{new}", "config")
            sub[new] = sub.pop(old)
    return node


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    other = _rename_old_keys(other, source)
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(_format(err, source)) from None


def _read_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file and its `_base_` ancestors, oldest first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular `_base_` chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors carry line numbers in their message
        raise ConfigError(f"{path}: cannot parse YAML: {err}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = node.pop("_base_", None)
    chain = _read_chain(path.parent / str(base), seen + (path,)) if base else []
    return chain + [(path, node)]


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, FutureWarning, stacklevel=3)


def validate(cfg: ExperimentConfig | DictConfig) -> None:
    """Checks that types alone cannot express; raises ConfigError naming the key."""
    for kind in cfg.schedule.stages:
        if kind not in STAGE_KINDS:
            raise ConfigError(f"key 'schedule.stages': unknown stage kind {kind!r}; use {STAGE_KINDS}")
    for key in ("name", "interpreter_optimizer"):
        value = cfg.optim[key]
        if value is not None and value not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"key 'optim.{key}': unknown optimizer {value!r}")
    if cfg.data.backend is not None:  # the old name: honoured, said once per process
        _warn_once("key 'data.backend' is deprecated: use data.decoder (same values)")
        cfg.data.decoder, cfg.data.backend = cfg.data.backend, None
    if cfg.data.decoder not in ("auto", "pyav", "decord", "torchcodec"):
        raise ConfigError(f"key 'data.decoder': use auto, pyav, decord or torchcodec, not "
                          f"{cfg.data.decoder!r}")
    if cfg.data.kind not in ("video", "image", "tensor_file"):
        raise ConfigError(f"key 'data.kind': unknown data kind {cfg.data.kind!r}")
    if cfg.model.time_embed_resize not in ("linear", "nearest"):
        raise ConfigError(f"key 'model.time_embed_resize': use linear or nearest, not "
                          f"{cfg.model.time_embed_resize!r}")
    if cfg.data.sampling not in ("videored", "mmaction", "timesformer"):
        raise ConfigError(f"key 'data.sampling': use videored, mmaction or timesformer, not "
                          f"{cfg.data.sampling!r}")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ConfigError("keys 'data.mean' / 'data.std': set both or neither (null: the "
                          "weights' own normalization)")
    if cfg.data.multiprocessing_context not in (None, "fork", "spawn", "forkserver"):
        raise ConfigError(f"key 'data.multiprocessing_context': use fork, spawn or forkserver, "
                          f"not {cfg.data.multiprocessing_context!r}")
    if cfg.data.max_bad_fraction is not None and not 0 <= cfg.data.max_bad_fraction <= 1:
        raise ConfigError(f"key 'data.max_bad_fraction': a fraction in [0, 1] or null, got {cfg.data.max_bad_fraction}")
    if cfg.data.loader_timeout < 0:
        raise ConfigError(f"key 'data.loader_timeout': seconds >= 0, got {cfg.data.loader_timeout}")
    if cfg.run.precision not in ("bf16", "fp32"):
        raise ConfigError(f"key 'run.precision': use bf16 or fp32, not {cfg.run.precision!r}")
    if cfg.run.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"key 'run.device': use auto, cpu or cuda, not {cfg.run.device!r}")
    for key in ("interpreter_epochs", "finetune_epochs", "supervised_epochs"):
        if cfg.schedule[key] < 0:
            raise ConfigError(f"key 'schedule.{key}': epochs must be >= 0, got {cfg.schedule[key]}")
    if cfg.schedule.max_steps_per_epoch is not None and cfg.schedule.max_steps_per_epoch < 1:
        raise ConfigError(f"key 'schedule.max_steps_per_epoch': >= 1 or null, got "
                          f"{cfg.schedule.max_steps_per_epoch}")
    groups = cfg.schedule.groups
    if groups is not None and any(not 0 <= g < cfg.model.groups for g in groups):
        raise ConfigError(f"key 'schedule.groups': {list(groups)} outside 0..{cfg.model.groups - 1}")
    trainable = [m.name for m in METHODS.values()
                 if m.train_schedule is not None or m.train_recipe is not None]
    if cfg.schedule.reduction not in (None, *trainable):
        raise ConfigError(f"key 'schedule.reduction': use {', '.join(trainable)} or null, not "
                          f"{cfg.schedule.reduction!r} (tome and rlt are used training-free)")
    try:
        check_fraction(cfg.schedule.kept_ratio, "kept_ratio")
    except ValueError as err:
        raise ConfigError(f"key 'schedule.kept_ratio': {err}") from None
    warm = list(cfg.schedule.keep_warmup_epochs)
    if len(warm) != 2 or not 0 <= warm[0] <= warm[1]:
        raise ConfigError(f"key 'schedule.keep_warmup_epochs': [start, end] with 0 <= start <= "
                          f"end, got {warm}")
    if cfg.schedule.reduction is not None and any(k != "supervised" for k in cfg.schedule.stages):
        raise ConfigError("key 'schedule.reduction': only with schedule.stages: [supervised] "
                          "(the interpreter stages have their own token selection)")
    if cfg.data.batch_size < 1:
        raise ConfigError("key 'data.batch_size': must be >= 1")
    k = cfg.data.clips_per_video
    if k < 1 or cfg.data.batch_size % k:
        raise ConfigError(f"key 'data.clips_per_video': must be >= 1 and divide data.batch_size "
                          f"({cfg.data.batch_size} clips a step), got {k}")
    if k > 1 and cfg.data.kind != "video":
        raise ConfigError(f"key 'data.clips_per_video': {k} clips per item needs data.kind video, "
                          f"not {cfg.data.kind!r}")
    if cfg.reinforce.baseline not in ("self_critical", "leave_one_out"):
        raise ConfigError(f"key 'reinforce.baseline': use self_critical or leave_one_out, "
                          f"not {cfg.reinforce.baseline!r}")
    if cfg.debug.pause_write_at not in (None, "start", "middle", "end"):
        raise ConfigError(f"key 'debug.pause_write_at': use start, middle or end, not {cfg.debug.pause_write_at!r}")
    if cfg.debug.pause_write_file not in ("checkpoint", "model"):
        raise ConfigError(f"key 'debug.pause_write_file': use checkpoint or model, "
                          f"not {cfg.debug.pause_write_file!r}")
    if cfg.reinforce.samples < 1:
        raise ConfigError(f"key 'reinforce.samples': must be >= 1, got {cfg.reinforce.samples}")
    if (cfg.reinforce.baseline == "leave_one_out" and cfg.data.batch_size < 2
            and cfg.reinforce.samples < 2):
        raise ConfigError("key 'reinforce.baseline': leave_one_out needs data.batch_size >= 2 "
                          "or reinforce.samples >= 2")


def packaged_configs() -> Path:
    """The experiment files shipped inside the package (`videored/configs/`; `configs/` in a
    checkout is a link to it), so a wheel install finds them as an editable one does."""
    return Path(str(resources.files("videored") / "configs"))


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given if it exists, else the packaged file of that name.

    `configs/quickstart/jointst_tiny_synth.yaml` and `quickstart/jointst_tiny_synth.yaml` both
    name the packaged quickstart config when no such file exists under the working directory.
    """
    path = Path(path)
    if path.is_file():
        return path
    relative = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    packaged = packaged_configs().joinpath(*relative) if relative and not path.is_absolute() else None
    if packaged is not None and packaged.is_file():
        return packaged
    shipped = sorted(str(p.relative_to(packaged_configs()))
                     for p in packaged_configs().rglob("*.yaml"))
    raise ConfigError(f"config file not found: {path} (nor among the packaged configs: "
                      f"{', '.join(shipped)})")


def load_config(path: str | Path | None, overrides: list[str] = (),
                base: dict | None = None) -> DictConfig:
    """Load an experiment file (with its `_base_` chain) and dotted overrides into a typed config.

    base: a plain dict applied first (e.g. the config stored in a checkpoint).
    Returns a structured DictConfig (attribute access, types enforced on assignment).
    """
    cfg = OmegaConf.structured(ExperimentConfig)
    if base is not None:
        cfg = _merge(cfg, OmegaConf.create(base), "stored config")
    # `???` in a file marks a value the user must give. OmegaConf's merge lets `???` override
    # nothing (a typed default such as None stays), so the marks are tracked here: key -> file.
    required: dict[str, str] = {}
    layers: list[tuple[str, DictConfig]] = []
    if path is not None:
        layers += [(str(file), node) for file, node in _read_chain(resolve_config_path(path))]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        layers.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
    for source, node in layers:
        marked = OmegaConf.missing_keys(node)
        required = {k: v for k, v in required.items() if k not in _leaf_keys(node) or k in marked}
        required.update({k: source for k in marked if k not in required})
        cfg = _merge(cfg, node, source)
    validate(cfg)
    for key, source in sorted(required.items()):
        raise ConfigError(f"{source}: key '{key}' is required (marked ???) but not set; give it "
                          f"on the command line, e.g. {key}=VALUE")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{path}: required keys not set: {', '.join(missing)}")
    return cfg


def _leaf_keys(node: DictConfig, prefix: str = "") -> set[str]:
    """Dotted keys of every leaf value of `node` (`???` ones included)."""
    keys = set()
    for k in node.keys():
        if OmegaConf.is_missing(node, k):
            keys.add(f"{prefix}{k}")
            continue
        child = node[k]
        if isinstance(child, DictConfig) and len(child) and not f"{prefix}{k}".startswith("model.kwargs"):
            keys |= _leaf_keys(child, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def config_from_dict(data: dict) -> DictConfig:
    """A typed config from a plain dict (e.g. the one stored in a checkpoint or model.pt)."""
    cfg = _merge(OmegaConf.structured(ExperimentConfig), OmegaConf.create(data), "stored config")
    validate(cfg)
    return cfg


# Keys that fix the shape of the model's weights or of its inputs: a run cannot resume with
# other values (its weights would not load, or would be fed other clips).
SHAPE_KEYS = ("model.name", "model.num_classes", "model.img_size", "model.num_frames", "model.depth",
              "model.groups", "model.kwargs", "data.kind")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node and not prefix.startswith("model.kwargs"):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_changes(stored: dict, current: DictConfig) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (stored value, current value)} for every leaf that differs between the
    config stored in a checkpoint and `current` (debug.* excluded: fault injection for tests).
    model.kwargs compares as one value. The stored dict is first completed with this version's
    defaults, so a key added since reads as its default."""
    try:
        before = to_dict(config_from_dict(stored))
    except ConfigError:  # written by another version: compare what is there
        before = stored
    old, new = _flatten(before), _flatten(to_dict(current))
    missing = object()
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if not k.startswith("debug.") and old.get(k, missing) != new.get(k, missing)}


def shape_changes(changes: dict[str, tuple[Any, Any]]) -> list[str]:
    """The keys of `changes` a resume cannot accept (SHAPE_KEYS)."""
    return [k for k in changes if any(k == s or k.startswith(s + ".") for s in SHAPE_KEYS)]


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
