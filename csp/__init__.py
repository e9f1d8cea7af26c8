"""csp — crystal structure prediction with self-learning Moment Tensor Potentials."""

__version__ = "0.1.0"
