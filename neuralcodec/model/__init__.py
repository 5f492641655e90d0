"""The neural network: transforms, hyperprior and quality control."""
from .network import ModelConfig, VaezNetwork, PAD_MULTIPLE  # noqa: F401
