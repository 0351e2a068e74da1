"""Fused loss kernels: CPU autograd functions and Triton kernels (see ``contrastive``)."""
