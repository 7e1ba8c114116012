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


def evaluate(
    workdir: str,
    eval_config: ml_collections.ConfigDict,
    *,
    step: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Generates images for the test captions and computes `eval_config.metrics` on them.

    Args:
        workdir: a training workdir.
        eval_config: what to evaluate and how (`evaluation_config.default_config`).
        step: checkpoint step; None for the latest.
        seed: noise seed.
        data_dir: TFDS data directory; None for the checkpoint config's.

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
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate.", required=True)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_integer("seed", 0, "Noise seed.")
    flags.DEFINE_string(
        "data_dir", None, "TFDS data directory (default: the one the checkpoint was trained with)."
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
    """`config.eval` with the flags' values."""
    eval_config = evaluation_config.default_config()
    for name in eval_config:
        if name in flags.FLAGS:
            value = flags.FLAGS[name].value
            eval_config[name] = tuple(value) if name == "metrics" else value
    return eval_config


def main(argv: Sequence[str]) -> None:
    """Runs `evaluate` with the flags and prints the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    report = evaluate(
        flags.FLAGS.workdir,
        eval_config_from_flags(),
        step=flags.FLAGS.step,
        seed=flags.FLAGS.seed,
        data_dir=flags.FLAGS.data_dir,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
