"""fastssl: fast, trustworthy self-supervised learning for computer vision.

The building blocks keep LightlySSL 1.6's module paths, class names and arguments, so
``from lightly import loss, transforms`` becomes ``from fastssl import loss, transforms``.
Submodules are imported on first use, which keeps ``import fastssl`` (and the CLI) fast.
"""

__version__ = "0.1.0"
