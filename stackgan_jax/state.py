"""Training state: both networks' variables and optimiser states, optimisers and schedules.

The state is a pytree with no TensorFlow, TFDS or CLU in sight, so it lives wherever JAX does.
"""

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from stackgan_jax import models


@flax.struct.dataclass
class NetState:
    """One network: trainable `params`, BatchNorm `batch_stats`, and its optimiser state."""

    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variables `{'params', 'batch_stats'}`."""
        return {"params": self.params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class GANState:
    """Everything that changes during training.

    `stage1_generator` is the frozen Stage-I generator's `{'params', 'batch_stats'}` in
    Stage-II (no optimiser state: it gets no gradients) and None in Stage-I.
    `generator_ema` is the exponential moving average of the generator's weights with its own
    BatchNorm statistics, `{'params', 'batch_stats'}`, when `config.train.ema_decay` > 0, else
    None.
    """

    step: jax.Array
    generator: NetState
    discriminator: NetState
    stage1_generator: Any = None
    generator_ema: Any = None

    @property
    def sampling_generator(self) -> dict[str, Any]:
        """The generator variables that sampling and evaluation use: the moving average if kept."""
        if self.generator_ema is not None:
            return self.generator_ema
        return self.generator.variables


class Optimizers(NamedTuple):
    """The generator's and the discriminator's optimisers."""

    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation


def as_optimizers(optimizer: "optax.GradientTransformation | Optimizers") -> Optimizers:
    """`Optimizers` as they are, or one optimiser used for both networks (the references)."""
    if isinstance(optimizer, Optimizers):
        return optimizer
    return Optimizers(optimizer, optimizer)


def learning_rate_schedule(
    train_config: ml_collections.ConfigDict,
    steps_per_epoch: int,
    learning_rate: float | None = None,
) -> optax.Schedule:
    """The config's step decay: lr × lr_decay_factor at each of `lr_decay_epochs`, in steps.

    `learning_rate` is the initial rate; None for `train_config.learning_rate`.
    """
    boundaries = {
        int(epoch) * steps_per_epoch: train_config.lr_decay_factor
        for epoch in train_config.lr_decay_epochs
    }
    initial = train_config.learning_rate if learning_rate is None else learning_rate
    return optax.piecewise_constant_schedule(initial, boundaries)


def make_optimizer(
    train_config: ml_collections.ConfigDict,
    steps_per_epoch: int,
    learning_rate: float | None = None,
) -> optax.GradientTransformation:
    """Adam(β1, β2) on the decayed learning rate; the same for G and D, as in the references."""
    return optax.adam(
        learning_rate_schedule(train_config, steps_per_epoch, learning_rate),
        b1=train_config.adam_b1,
        b2=train_config.adam_b2,
    )


def learning_rates(train_config: ml_collections.ConfigDict) -> tuple[float, float]:
    """(G's, D's) initial learning rates; `learning_rate` where `g_`/`d_learning_rate` is None."""
    base = train_config.learning_rate
    g_rate = train_config.get("g_learning_rate")
    d_rate = train_config.get("d_learning_rate")
    return (base if g_rate is None else g_rate), (base if d_rate is None else d_rate)


def make_optimizers(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation | Optimizers:
    """The config's optimiser, or a pair of them when G and D have their own learning rates."""
    g_rate, d_rate = learning_rates(train_config)
    if g_rate == d_rate:
        return make_optimizer(train_config, steps_per_epoch, g_rate)
    return Optimizers(
        make_optimizer(train_config, steps_per_epoch, g_rate),
        make_optimizer(train_config, steps_per_epoch, d_rate),
    )


def _net_state(variables: Any, optimizer: optax.GradientTransformation) -> NetState:
    return NetState(
        variables["params"], variables.get("batch_stats", {}), optimizer.init(variables["params"])
    )


def create_state(
    config: ml_collections.ConfigDict,
    key: jax.Array,
    optimizer: optax.GradientTransformation | Optimizers,
    stage1_variables: Any = None,
) -> GANState:
    """Freshly initialised networks of `config.stage` (run it under `jax.jit`).

    Args:
      config: a training config (`configs/stage*.py`).
      key: PRNG key for the weights.
      optimizer: the optimiser of both networks, or one each (`make_optimizers`).
      stage1_variables: Stage-II only: the frozen Stage-I generator's variables.

    Returns:
      The state at step 0; the generator's moving average, if the config keeps one, starts
      equal to the generator.
    """
    stage, model = config.stage, config.model
    if stage == 2 and stage1_variables is None:
        raise ValueError("Stage-II needs the Stage-I generator's variables.")
    g_key, d_key = jax.random.split(key)
    batch = 2  # Shapes only; BatchNorm needs more than one example to initialise sensibly.
    g_vars = models.init_variables(
        models.generator(model, stage), g_key, models.generator_inputs(model, stage, batch)
    )
    d_vars = models.init_variables(
        models.discriminator(model, stage), d_key, models.discriminator_inputs(model, stage, batch)
    )
    optimizers = as_optimizers(optimizer)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        generator=_net_state(g_vars, optimizers.generator),
        discriminator=_net_state(d_vars, optimizers.discriminator),
        stage1_generator=stage1_variables if stage == 2 else None,
        generator_ema=dict(g_vars) if config.train.get("ema_decay", 0.0) > 0 else None,
    )
