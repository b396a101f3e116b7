"""A small real-video task whose label lives in a few patches of a moving object.

Each video (H.264 mp4, 30 fps, 60 frames = 2 s, 88x80 px by default: wider than tall) shows one
saturated object (a square or a disk with a dark outline and a fading motion trail, 6-10 % of
the frame) moving in a straight line over a cluttered background: a blocky grey texture that
pans in a random direction plus small muted distractor shapes, each drifting and bouncing on its
own. Everything but the label is random and label-independent (shape, size, speed, start point,
the clutter), so most patches are truly redundant and the informative ones are the object's. The
per-frame object masks (body + outline + trail) are stored beside each video (`name.masks.npz`).

Two tasks (`SynthConfig.task`):
- "colour" (default): the label is the object's colour (up to 6), its direction is random. A
  tiny JointST TimeSformer learns it from scratch in a few dozen CPU steps (the quickstart).
- "direction": the label is the motion direction, one of `num_classes` angles evenly spaced on
  the circle (image coordinates: 0 = right, 90 deg = down), colour random. It needs temporal
  reasoning and is much harder: a 4-block, width-96 model trained from scratch on 512 clips still
  sat near chance on validation after ~500 steps (it memorized the training set). A horizontal
  flip changes its labels, so its `dataset.json` turns training flips off.

The object stays inside the region every test-time crop sees: after the short side is resized to
the crop size, three square crops along the long side share the central columns [W - H, H) of
the original frame (independent of the crop size), so the whole trajectory (trail included) is
kept in x in [W - H + 2, H - 2], y in [2, H - 2].

Everything is drawn from `numpy.random.default_rng([seed, split, label, i])`, so a seed gives the
same videos, masks and lists (x264 single-threaded, without mbtree: the same bytes in any process).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videored.data.csv_list import DATASET_INFO, write_classes, write_video_list
from videored.data.encoding import write_video
from videored.data.masks import save_masks

SPLITS = {"train": 0, "val": 1, "test": 2}
_COMPASS = {0: "right", 45: "down_right", 90: "down", 135: "down_left", 180: "left", 225: "up_left", 270: "up", 315: "up_right"}
# Saturated object colours; the background and distractors are kept low-saturation.
_TRAIL_COPIES = 5
_PALETTE = np.array([[235, 40, 40], [40, 220, 60], [50, 90, 250], [245, 220, 30], [230, 50, 230], [30, 220, 230]], dtype=np.float32)
_COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")


@dataclass(frozen=True)
class SynthConfig:
    height: int = 80
    width: int = 88
    num_frames: int = 60
    fps: int = 30
    object_area: tuple[float, float] = (0.04, 0.055)  # fraction of the frame (body only)
    object_travel: tuple[float, float] = (26.0, 32.0)  # px over the whole video
    trail_length: float = 10.0  # px behind the object
    num_distractors: tuple[int, int] = (6, 10)
    crf: int = 20
    task: str = "colour"  # "colour": label = object colour; "direction": label = motion direction

    def __post_init__(self) -> None:
        if self.task not in ("direction", "colour"):
            raise ValueError(f"task must be 'direction' or 'colour', got {self.task!r}")
        if self.width < self.height or self.height % 2 or self.width % 2:
            raise ValueError(f"frames must be landscape with even sides, got {self.height}x{self.width}")
        safe_w = 2 * self.height - self.width - 4  # width of the region all three test crops see
        biggest = 2 * math.sqrt(self.object_area[1] * self.height * self.width / math.pi) + 2  # disk + outline
        if biggest + self.object_travel[1] + self.trail_length > safe_w:
            raise ValueError(
                f"object ({biggest:.0f} px) + travel ({self.object_travel[1]} px) + trail "
                f"({self.trail_length} px) exceed the safe width {safe_w} px"
            )


def class_names(num_classes: int, task: str = "colour") -> list[str]:
    """Direction names (4 classes: right, down, left, up) or colour names."""
    if task == "colour":
        return list(_COLOUR_NAMES[:num_classes])
    names = []
    for c in range(num_classes):
        deg = 360 * c / num_classes
        names.append(_COMPASS.get(int(deg), f"angle_{deg:g}") if deg == int(deg) else f"angle_{deg:g}")
    return names


def render_video(label: int, num_classes: int, rng: np.random.Generator, cfg: SynthConfig = SynthConfig(),
                 *, with_object: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and object masks (T, H, W) bool of one video of class `label`.

    with_object=False: the same kind of background and distractors without the object (the
    "no_object" class; its masks are all False and `label` is ignored).
    """
    t_len, h, w = cfg.num_frames, cfg.height, cfg.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # pixel centres, (H, W)

    # --- background: blocky grey texture on a larger canvas, panned by a random velocity
    pan_dir = rng.uniform(0, 2 * np.pi)
    pan_speed = rng.uniform(0.1, 0.4)  # px/frame
    pad = int(math.ceil(0.4 * t_len)) + 1
    block = int(rng.integers(5, 10))
    small = rng.uniform(90, 150, size=((h + 2 * pad) // block + 2, (w + 2 * pad) // block + 2, 1))
    small = small + rng.uniform(-12, 12, size=small.shape[:2] + (3,))  # slight tints
    canvas = np.repeat(np.repeat(small, block, axis=0), block, axis=1)[: h + 2 * pad, : w + 2 * pad]

    # --- distractors: small muted shapes drifting and bouncing independently
    n_dis = int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))
    d_pos = np.stack([rng.uniform(4, w - 4, n_dis), rng.uniform(4, h - 4, n_dis)], axis=1)  # (n, 2) x, y
    d_ang = rng.uniform(0, 2 * np.pi, n_dis)
    d_vel = np.stack([np.cos(d_ang), np.sin(d_ang)], axis=1) * rng.uniform(0.3, 1.2, (n_dis, 1))
    d_size = rng.uniform(2.5, 4.5, n_dis)  # half side / radius, px
    d_disk = rng.random(n_dis) < 0.5
    d_col = rng.uniform(50, 200, (n_dis, 1)) + rng.uniform(-30, 30, (n_dis, 3))

    # --- the object: its direction (task "direction") or its colour (task "colour") is the label
    area = rng.uniform(*cfg.object_area) * h * w
    disk = bool(rng.random() < 0.5)
    half = math.sqrt(area / math.pi) if disk else math.sqrt(area) / 2  # radius or half side
    if cfg.task == "colour":
        colour = _PALETTE[label] + rng.uniform(-15, 15, 3)
        theta = rng.uniform(0, 2 * np.pi)
    else:
        colour = _PALETTE[rng.integers(len(_PALETTE))] + rng.uniform(-15, 15, 3)
        theta = 2 * np.pi * label / num_classes
    travel = rng.uniform(*cfg.object_travel)
    unit = np.array([np.cos(theta), np.sin(theta)])  # (x, y)
    step = unit * travel / (t_len - 1)  # px/frame
    # start point such that the object (outline included) and its trail stay in the safe box
    # over the whole trajectory: the path runs from start - trail to start + travel.
    x_lo, x_hi = w - h + 2 + half + 1, h - 2 - half - 1
    y_lo, y_hi = 2 + half + 1, h - 2 - half - 1
    first, last = -unit * cfg.trail_length, unit * travel  # extreme offsets from the start point
    x0 = rng.uniform(x_lo - min(first[0], last[0]), x_hi - max(first[0], last[0]))
    y0 = rng.uniform(y_lo - min(first[1], last[1]), y_hi - max(first[1], last[1]))

    def draw_object(img: np.ndarray, t: int) -> np.ndarray:
        """Paint the object (trail, body, dark outline) of frame t into img; its (H, W) mask."""
        cx, cy = x0 + step[0] * t, y0 + step[1] * t
        mask = np.zeros((h, w), dtype=bool)
        # motion trail (like motion blur): fading copies behind the object, farthest first. It
        # makes the direction visible inside the object's own patches of every frame.
        for j in range(_TRAIL_COPIES, 0, -1):
            back = cfg.trail_length * j / _TRAIL_COPIES
            ghost = _shape_mask(xs, ys, cx - unit[0] * back, cy - unit[1] * back, half, disk)
            alpha = 0.8 * (1 - j / (_TRAIL_COPIES + 1))
            img[ghost] = (1 - alpha) * img[ghost] + alpha * colour
            mask |= ghost
        obj = _shape_mask(xs, ys, cx, cy, half, disk)
        rim = _shape_mask(xs, ys, cx, cy, half + 1.0, disk) & ~obj  # dark outline: crisp edges
        img[rim] = 20.0
        img[obj] = colour
        return mask | obj | rim

    frames = np.empty((t_len, h, w, 3), dtype=np.uint8)
    masks = np.empty((t_len, h, w), dtype=bool)
    for t in range(t_len):
        oy = int(round(pad + math.sin(pan_dir) * pan_speed * t))
        ox = int(round(pad + math.cos(pan_dir) * pan_speed * t))
        img = canvas[oy : oy + h, ox : ox + w].copy()  # (H, W, 3) float
        for i in range(n_dis):
            img[_shape_mask(xs, ys, d_pos[i, 0], d_pos[i, 1], d_size[i], d_disk[i])] = d_col[i]
        d_pos += d_vel
        for axis, limit in ((0, w), (1, h)):  # bounce on the frame edges
            out = (d_pos[:, axis] < 3) | (d_pos[:, axis] > limit - 3)
            d_vel[out, axis] *= -1
            d_pos[:, axis] = np.clip(d_pos[:, axis], 3, limit - 3)
        mask = draw_object(img, t) if with_object else np.zeros((h, w), dtype=bool)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        masks[t] = mask
    return frames, masks


def _shape_mask(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, half: float, disk: bool) -> np.ndarray:
    """(H, W) bool: pixel centres inside a disk of radius `half` or a square of half side `half`."""
    if disk:
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half * half
    return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_classes: int = 4,
    videos_per_class: int = 24,
    seed: int = 0,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
    cfg: SynthConfig = SynthConfig(),
    progress: bool = False,
    no_object_class: bool = False,
) -> dict:
    """Write videos, masks, `{train,val,test}.csv`, `classes.txt` and `dataset.json` under `out_dir`.

    no_object_class: add a last class, "no_object", of videos without the object (num_classes + 1
    labels in all). Without it a classifier answers some class by default when it sees no object,
    so that class's object is redundant to it, and REINFORCE rightly learns to drop it: on the
    quickstart the interpreter kept 18 % of blue objects' tokens (the dense model's no-object
    guess was blue 60 % of the time). With it, every class needs its object to be seen.

    CSV paths are relative to the csv's folder (`videos/train/train_c00_0000.mp4 0`), so the folder
    can be moved; `VideoClipDataset` resolves them against the csv's directory.
    val/test default to max(2, videos_per_class // 4) videos per class each. Returns a summary.
    """
    max_classes = 8 if cfg.task == "direction" else len(_PALETTE)
    if not 2 <= num_classes <= max_classes:
        raise ValueError(f"num_classes must be in [2, {max_classes}] for task {cfg.task!r}, got {num_classes}")
    counts = {
        "train": videos_per_class,
        "val": val_per_class if val_per_class is not None else max(2, videos_per_class // 4),
        "test": test_per_class if test_per_class is not None else max(2, videos_per_class // 4),
    }
    out = Path(out_dir)
    labels = num_classes + int(no_object_class)  # the no-object class, if any, is the last label
    jobs = [(split, c, i) for split, n in counts.items() for c in range(labels) for i in range(n)]
    if progress:
        from tqdm import tqdm

        jobs_iter = tqdm(jobs, desc="synth videos", unit="video")
    else:
        jobs_iter = jobs
    rows: dict[str, list[tuple[str, int]]] = {s: [] for s in counts}
    object_fraction = []
    for split, c, i in jobs_iter:
        rel = f"videos/{split}/{split}_c{c:02d}_{i:04d}.mp4"
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, SPLITS[split], c, i])
        with_object = c < num_classes
        frames, masks = render_video(c if with_object else 0, num_classes, rng, cfg, with_object=with_object)
        write_video(path, frames, fps=cfg.fps, crf=cfg.crf)
        save_masks(path, masks)
        if with_object:
            object_fraction.append(float(masks.mean()))
        rows[split].append((rel, c))
    for split, split_rows in rows.items():
        write_video_list(out / f"{split}.csv", split_rows)
    write_classes(out / "classes.txt", class_names(num_classes, cfg.task) + ["no_object"] * int(no_object_class))
    summary = {
        "num_classes": labels,
        "no_object_class": no_object_class,
        "videos": {s: len(r) for s, r in rows.items()},
        "seed": seed,
        "config": asdict(cfg),
        "object_fraction_mean": float(np.mean(object_fraction)),
        "paths": "relative to this folder",
        # direction task: a horizontal flip turns "right" into "left", so VideoClipDataset reads
        # this and does not flip in training (as for Something-Something)
        "hflip_preserves_label": cfg.task != "direction",
    }
    (out / DATASET_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
