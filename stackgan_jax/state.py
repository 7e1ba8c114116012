"""Training state: both networks' variables and optimiser states, optimisers and schedules.

The state is a pytree with no TensorFlow, TFDS or CLU in sight, so it lives wherever JAX does.
"""

from typing import Any

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
    """

    step: jax.Array
    generator: NetState
    discriminator: NetState
    stage1_generator: Any = None


def learning_rate_schedule(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """The config's step decay: lr × lr_decay_factor at each of `lr_decay_epochs`, in steps."""
    boundaries = {
        int(epoch) * steps_per_epoch: train_config.lr_decay_factor
        for epoch in train_config.lr_decay_epochs
    }
    return optax.piecewise_constant_schedule(train_config.learning_rate, boundaries)


def make_optimizer(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Adam(β1, β2) on the decayed learning rate; the same for G and D, as in the references."""
    return optax.adam(
        learning_rate_schedule(train_config, steps_per_epoch),
        b1=train_config.adam_b1,
        b2=train_config.adam_b2,
    )


def _net_state(variables: Any, optimizer: optax.GradientTransformation) -> NetState:
    return NetState(
        variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
    )


def create_state(
    config: ml_collections.ConfigDict,
    key: jax.Array,
    optimizer: optax.GradientTransformation,
    stage1_variables: Any = None,
) -> GANState:
    """Freshly initialised networks of `config.stage` (run it under `jax.jit`).

    Args:
      config: a training config (`configs/stage*.py`).
      key: PRNG key for the weights.
      optimizer: the optimiser of both networks (`make_optimizer`).
      stage1_variables: Stage-II only: the frozen Stage-I generator's variables.

    Returns:
      The state at step 0.
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
    return GANState(
        step=jnp.zeros((), jnp.int32),
        generator=_net_state(g_vars, optimizer),
        discriminator=_net_state(d_vars, optimizer),
        stage1_generator=stage1_variables if stage == 2 else None,
    )
