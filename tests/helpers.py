"""Shared test helpers: small inputs, standard errors, slopes."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nfd.dynamics import _checkpoint
from nfd.tasks import Task


def unit_inputs(num: int, dim: int, *, key) -> jnp.ndarray:
    """``num`` Gaussian inputs rescaled to |x|² = D (docs/math's oracle convention)."""
    x = jr.normal(key, (num, dim))
    return x * jnp.sqrt(dim / jnp.sum(x**2, axis=1, keepdims=True))


def mean_se(x, axis: int = 0):
    """Sample mean and its standard error along ``axis``."""
    x = np.asarray(x)
    return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(x.shape[axis])


def slope(xs, ys) -> float:
    """Least-squares slope of log|y| against log x."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.abs(np.asarray(ys))), 1)[0])


def sign_task(num_train=4, num_test=2, dim=8, *, seed=0) -> Task:
    """Spec §5.2 inputs: rows rescaled to |x|² = D, y = sign(x₁ + 0.3 x₂)."""
    xr = np.random.default_rng(seed).standard_normal((num_train + num_test, dim))
    x = xr * np.sqrt(dim / np.sum(xr**2, axis=1, keepdims=True))
    y = np.sign(x[:, :1] + 0.3 * x[:, 1:2])
    P = num_train
    return Task(
        name="sign",
        x_train=jnp.asarray(x[:P]),
        y_train=jnp.asarray(y[:P]),
        x_test=jnp.asarray(x[P:]),
        y_test=jnp.asarray(y[P:]),
        num_classes=0,
    )


# -- thin test drivers over `nfd.dynamics.evolve` ----------------------------------------------
def batched(tree):
    """A single draw (network, particles) as an ensemble of one (leading axis 1 on every array)."""
    import equinox as eqx
    import jax

    return jax.tree.map(lambda a: a[None] if eqx.is_array(a) else a, tree)


def network_of(model, *, optimizer: str = "sgd", loss=None, readout=None, center: bool = True):
    """The `FiniteNetwork` dynamics whose draws look like ``model`` (a single or batched ResNet)."""
    from nfd.nn import MSE, FeatureReadout
    from nfd.train import SGD, Adam, FiniteNetwork, adam_eps

    width = model.U.shape[-2]
    opt = SGD() if optimizer == "sgd" else Adam(eps=adam_eps(width))
    return FiniteNetwork(
        width=width,
        depth=model.blocks[0].shape[-3],
        param=model.param,
        activation=model.activation,
        optimizer=opt,
        loss=MSE() if loss is None else loss,
        block=model.block,
        backward=model.backward,
        readout=FeatureReadout() if readout is None else readout,
        post_activation=model.post_activation,
        center=center,
    )


def train(
    models,
    task,
    *,
    optimizer: str = "sgd",
    loss,
    lr,
    num_steps: int,
    batch_size: int = 0,
    every: int = 1,
    save_also=(),
    layer_times=(0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    center: bool = True,
    batch_key,
    progress=False,
    readout=None,
    blowup: float = 1e6,
):
    """Train an ensemble of ResNets (leading axis E) with `evolve` (the package's one loop);
    ``blowup``: `evolve`'s divergence threshold (``inf`` to measure a blow-up)."""
    from nfd.dynamics import Points, SaveAt, batch_schedule, evolve, save_steps

    net = network_of(models, optimizer=optimizer, loss=loss, readout=readout, center=center)
    return evolve(
        net,
        Points.from_task(task),
        lr=lr,
        schedule=batch_schedule(task.n_train, batch_size, num_steps, key=batch_key),
        saveat=SaveAt(
            steps=save_steps(num_steps, every, save_also),
            ntk=ntk,
            kernels=kernels,
            layer_times=tuple(layer_times),
        ),
        initial=models,
        progress=progress,
        blowup=blowup,
    )


def simulate(
    particles,
    task,
    *,
    param,
    activation,
    readout,
    loss,
    lr,
    schedule,
    coupling=None,
    every: int = 1,
    save_also=(),
    layer_times=(0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    solver=None,
    progress=False,
):
    """Run the random-matrix particle limit from batched ``particles`` with `evolve`.

    ``coupling`` defaults to mode B where the backward matrices differ from the forward ones.
    """
    import jax.numpy as jnp

    import nfd
    from nfd.dynamics import Points, SaveAt, evolve, save_steps
    from nfd.limit import MatrixParticles
    from nfd.solver import EulerMaruyama
    from nfd.tasks import Task

    if coupling is None:
        differs = bool(jnp.any(particles.W_back != particles.W))
        coupling = nfd.DecoupledWeights() if differs else nfd.ReusedWeights()
    dyn = MatrixParticles(
        num_particles=particles.U.shape[-2],
        num_layer_steps=particles.W.shape[-3],
        param=param,
        activation=activation,
        loss=loss,
        coupling=coupling,
        readout=readout,
        block=nfd.OneLayer() if particles.W1 is None else nfd.TwoLayer(),
        solver=EulerMaruyama() if solver is None else solver,
    )
    num_steps = int(schedule.shape[0])
    return evolve(
        dyn,
        Points.from_task(task) if isinstance(task, Task) else task,
        lr=lr,
        schedule=schedule,
        saveat=SaveAt(
            steps=save_steps(num_steps, every, save_also),
            ntk=ntk,
            kernels=kernels,
            layer_times=tuple(layer_times),
        ),
        initial=particles,
        progress=progress,
    )


def simulate_limit(particles, x_train, y_train, x_test, y_test, **kwargs):
    """`simulate` on explicit train and test arrays (the signature of the old host loop)."""
    import jax.numpy as jnp

    from nfd.dynamics import Points

    points = Points(
        x=jnp.concatenate([x_train, x_test]),
        y=jnp.concatenate([y_train, y_test]),
        num_train=x_train.shape[0],
    )
    return simulate(particles, points, **kwargs)


def tiny_sweep(*, widths=(16, 32, 64), depths=(2,), steps: int = 2) -> str:
    """A `kind = "sweep"` config small enough for a test: tanh teacher-student with 4 training
    points, 2 seeds, 32 particles, mode A only."""
    return f"""
kind = "sweep"
seeds = 2
precision = "float64"

[task]
name = "teacher_student"
n_train = 4
n_test = 2
in_dim = 4

[model]
activation = "tanh"

[optim]
lr = 0.5
steps = {steps}

[output]
every = 1

[limit]
particles = 32

[sweep]
widths = {list(widths)}
depths = {list(depths)}
couplings = ["exact"]
"""


class StopAt(_checkpoint.Checkpoint):
    """A checkpoint whose ``n``-th save check sees a stop request: what SIGTERM does there (set
    the class attribute ``stop_after``; monkeypatch ``_checkpoint.Checkpoint`` with the class)."""

    stop_after = 0

    def due(self) -> bool:
        type(self).stop_after -= 1
        if type(self).stop_after == 0:
            self.stop_requested = True
        return super().due()
