"""Evaluates a trained checkpoint on its dataset's held-out captions.

    python -m stackgan_jax.evaluate --workdir=runs/demo/stage2 --metrics=attributes
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=fid --num_samples=30000
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=is \
        --inception_checkpoint=inception_finetuned_models/birds_valid299/model.ckpt-5000
    python -m stackgan_jax.evaluate --workdir=runs/coco/stage2 --metrics=fid,is \
        --fid_weights=pt_inception-2015-12-05-6726825d.pth \
        --inception_checkpoint=pt_inception-2015-12-05-6726825d.pth
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=clip_score \
        --clip_weights=ViT-B-32.pt --clip_vocab=bpe_simple_vocab_16e6.txt.gz
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=fid --fid_protocol=dfgan \
        --fid_weights=inception_v3_google-0cc3c7bd.pth --ref_stats=bird_val256_FIDK0.npz

One image is generated per test caption (caption c of every test image before caption c + 1),
up to --num_samples, in batches. The report goes to <workdir>/eval/step_<N>.json and to
TensorBoard under `eval/`. Training computes the same metrics of its current generator every
`config.eval.every_steps` steps through the same `Evaluator`.

Metrics (`stackgan_jax/evaluation/`, one module each): `attributes` (synthetic_birds only:
how often the attribute classifier reads the colours the caption names, beside its accuracy on the
real test images), `fid` (FID against the real test images at the stage's size; for Stage-II also
of the Stage-I images enlarged to 256 px, which Stage-II should beat), `is` (StackGAN's
Inception Score) and `clip_score` (GALIP's CLIP score: mean cosine similarity of CLIP ViT-B/32
image and caption features). The flags after --workdir, --step, --seed and --data_dir are the
fields of `config.eval` (`evaluation.config`), with the same names and help.

`--protocol=stackgan|dfgan` sets those fields as that paper's evaluation did
(`evaluation.config.PROTOCOLS`); flags given beside it override it.

Any model's images, not only ours (`evaluation.image_files` says which layouts):

    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --save_images=runs/birds/images
    python -m stackgan_jax.evaluate --images_dir=runs/birds/images --dataset=stackgan_birds \
        --metrics=fid,attributes
    python -m stackgan_jax.evaluate --images_dir=DFGAN/valid --captions=captions.txt \
        --protocol=dfgan --ref_stats=bird_val256_FIDK0.npz --fid_weights=... --clip_weights=...

`--save_images` writes the images a checkpoint's evaluation scored, and `--images_dir` on them
gives that evaluation's numbers again: the same for FID (ttur, pytorch-fid) and IS, which
round to 8-bit pixels as the files do, and within the 8-bit rounding for the metrics fed floats.
With `--images_dir` the report goes to DIR/evaluation.json; `--dataset` (a prepared dataset)
gives the real test images (FID without --ref_stats, attributes) and the captions' classes
(r_precision).
"""

import functools
import json
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from clu import metric_writers
from etils import epath

from stackgan_jax import cli, inference
from stackgan_jax.data import source as source_lib
from stackgan_jax.evaluation import config as evaluation_config
from stackgan_jax.evaluation import evaluator as evaluator_lib
from stackgan_jax.evaluation import image_files


def evaluate(
    workdir: str,
    eval_config: ml_collections.ConfigDict,
    *,
    step: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    save_images: str | None = None,
) -> dict[str, Any]:
    """Generates images for the test captions and computes `eval_config.metrics` on them.

    Args:
        workdir: a training workdir.
        eval_config: what to evaluate and how (`evaluation_config.default_config`).
        step: checkpoint step; None for the latest.
        seed: noise seed.
        data_dir: TFDS data directory; None for the checkpoint config's.
        save_images: a new directory to write the generated images and their captions to
            (`image_files.write_images`); None: none.

    Returns:
        The report, also written to <workdir>/eval/step_<N>.json and TensorBoard.
    """
    model = inference.load(workdir, step)
    data = model.config.data
    source = source_lib.load_split(
        data.dataset, "test", data_dir or data.data_dir, text_dim=model.config.model.text_dim
    )
    evaluator = evaluator_lib.make_evaluator(
        eval_config,
        source,
        dataset=data.dataset,
        stage=model.stage,
        seed=seed,
        workdir=workdir,
    )
    start = time.perf_counter()
    images = evaluator.generate_images(functools.partial(inference.generate, model))
    if save_images:
        image_files.write_images(save_images, images, evaluator.captions)
    report: dict[str, Any] = {
        "workdir": workdir,
        "step": model.step,
        "dataset": data.dataset,
        "num_samples": len(evaluator.captions),
        "seed": seed,
        "generator": (
            f"moving average ({model.generator_item})" if model.uses_ema else model.generator_item
        ),
        "generation_seconds": round(time.perf_counter() - start, 1),
    }
    report |= evaluator.score(images)
    _write_report(workdir, model.step, report)
    return report


def evaluate_images(
    images_dir: str,
    eval_config: ml_collections.ConfigDict,
    *,
    captions: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Computes `eval_config.metrics` on a directory of images, ours or any model's.

    Args:
        images_dir: the images (`image_files.find_images` says which layouts).
        eval_config: what to evaluate and how; `num_samples` does not apply (every image is
            scored), `batch_size` is CLIP's batch as with --workdir.
        captions: one caption per image; None: images_dir's captions.txt, if any.
        dataset: a prepared dataset whose test split gives the real images and the captions'
            classes; None: none (FID then needs `ref_stats`).
        data_dir: its TFDS data directory.
        seed: the seed of the Inception Score's shuffle and R-precision's draws.

    Returns:
        The report, also written to <images_dir>/evaluation.json.
    """
    source = source_lib.load_split(dataset, "test", data_dir) if dataset else None
    dump = image_files.find_images(images_dir, captions)
    context = evaluator_lib.Context(
        source, dump.captions, dataset or images_dir, dump.stage, seed, workdir=None
    )
    metrics = evaluator_lib.load_metrics(eval_config, context)
    images = image_files.read_images(dump)
    report: dict[str, Any] = {
        "images_dir": images_dir,
        "captions": dump.captions_file,
        "dataset": dataset,
        "num_samples": len(dump),
        "seed": seed,
    }
    report |= {name: metric(images) for name, metric in metrics.items()}
    path = epath.Path(images_dir) / "evaluation.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    logging.info("Wrote %s", path)
    return report


def _write_report(workdir: str, step: int, report: dict[str, Any]) -> None:
    directory = epath.Path(workdir) / "eval"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    writer = metric_writers.create_default_writer(str(directory))
    writer.write_scalars(step, evaluator_lib.scalars(report))
    writer.flush()
    logging.info("Wrote %s", path)


def _define_flags() -> None:
    """The command line's flags (defined only when run as a program, so modules import freely)."""
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate (or --images_dir).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_integer("seed", 0, "Noise seed (and the seed of IS's and R-precision's draws).")
    flags.DEFINE_string(
        "data_dir", None, "TFDS data directory (default: the one the checkpoint was trained with)."
    )
    flags.DEFINE_string(
        "save_images", None, "With --workdir: a new directory to write the scored images to."
    )
    flags.DEFINE_string(
        "images_dir", None, "Score the images of this directory instead of a checkpoint's."
    )
    flags.DEFINE_string(
        "captions", None, "With --images_dir: one caption per image (default: DIR/captions.txt)."
    )
    flags.DEFINE_string(
        "dataset", None, "With --images_dir: the prepared dataset whose test split they match."
    )
    flags.DEFINE_enum(
        "protocol",
        None,
        list(evaluation_config.PROTOCOLS),
        "Set the metrics and sample count as that paper's evaluation did; flags override.",
    )
    # One flag per `config.eval` field (training's `every_steps` aside), named as the field.
    for name, default in evaluation_config.default_config().items():
        if name == "every_steps":
            continue
        help_text = evaluation_config.HELP[name]
        if name == "metrics":
            flags.DEFINE_list(name, list(default), help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text, lower_bound=1)
        else:
            flags.DEFINE_string(name, default, help_text)


def eval_config_from_flags() -> ml_collections.ConfigDict:
    """`config.eval`: the defaults, or `--protocol`'s fields, with the flags given on top."""
    eval_config = evaluation_config.default_config()
    protocol = flags.FLAGS.protocol if "protocol" in flags.FLAGS else None
    if protocol:
        eval_config = evaluation_config.with_protocol(eval_config, protocol)
    for name in eval_config:
        if name in flags.FLAGS and (flags.FLAGS[name].present or not protocol):
            value = flags.FLAGS[name].value
            eval_config[name] = tuple(value) if name == "metrics" else value
    return eval_config


# Each mode: (its input flag, its function, its own flags, named as the function's arguments).
_MODES = (
    ("workdir", evaluate, ("step", "save_images")),
    ("images_dir", evaluate_images, ("captions", "dataset")),
)


def main(argv: Sequence[str]) -> None:
    """Runs `evaluate` (or `evaluate_images`) with the flags and prints the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    chosen = [mode for mode in _MODES if flags.FLAGS[mode[0]].value is not None]
    if len(chosen) != 1:
        raise app.UsageError("pass one of --workdir (a checkpoint) and --images_dir (images)")
    source, function, own = chosen[0]
    others = [name for mode in _MODES if mode is not chosen[0] for name in mode[2]]
    misplaced = [f"--{name}" for name in others if flags.FLAGS[name].present]
    if misplaced:
        raise app.UsageError(f"{', '.join(misplaced)} cannot be used with --{source}")
    arguments = {name: flags.FLAGS[name].value for name in ("seed", "data_dir", *own)}
    report = function(flags.FLAGS[source].value, eval_config_from_flags(), **arguments)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
