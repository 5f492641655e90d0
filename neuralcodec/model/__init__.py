"""The neural network: transforms, hyperprior and quality control.

`ModelConfig` and `VaezNetwork` need torch and are loaded on first access, so that the
torch-free parts (`constants`, `fixed_point`, `integer_hyper`, `integer_context`,
`numpy_synthesis`) can be imported by a decoder that never touches torch.
"""
from .constants import PAD_MULTIPLE  # noqa: F401


def __getattr__(name):
    if name in ("ModelConfig", "VaezNetwork"):
        from . import network
        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
