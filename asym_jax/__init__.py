"""asym_jax: backpropagation without weight symmetry, in JAX.

Asymmetric feedback layers (`asym_jax.feedback`, `asym_jax.layers`), Batch Manhattan update
rules as optax transforms (`asym_jax.optimizers`), and the networks, datasets, training
protocol and tables of Liao, Leibo & Poggio, "How Important is Weight Symmetry in
Backpropagation?" (AAAI 2016).
"""

__version__ = "0.1.0"
