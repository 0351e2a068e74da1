"""Helpers shared by the self-supervised models: momentum, shuffling, tokens and masks.

Same names, signatures and return structures as LightlySSL 1.6's ``lightly.models.utils``
for the functions that AIM, Barlow Twins, BYOL, DCL, DenseCL, DINO(v2), MAE, MoCo, MSN,
NNCLR, PMSN, SimCLR, SimMIM, SimSiam, SwaV, TiCo and VICReg(L) use. Differences that a user
can notice are listed in each docstring; the main ones:

* :func:`update_momentum` is one ``torch._foreach_lerp_`` over all parameters (one pass
  over memory instead of two).
* Random functions accept an optional ``generator`` so a seed fixes them without touching
  the global random state; :func:`random_block_mask` draws from torch, not Python's
  ``random`` module.
* :func:`batch_shuffle_distributed` needs no broadcast: every process derives the same
  permutation from random keys that are gathered from all processes.
* :func:`pool_masked` honours ``reduce`` for batched inputs and works for unbatched ones.

Example:
    >>> import copy
    >>> model = torch.nn.Linear(4, 2)
    >>> model_ema = copy.deepcopy(model)
    >>> deactivate_requires_grad(model_ema)
    >>> update_momentum(model, model_ema, m=0.99)
"""

from __future__ import annotations

from fastssl.models._utils.blocks import (
    add_stochastic_depth_to_blocks,
    get_named_leaf_modules,
    update_drop_path_rate,
)
from fastssl.models._utils.masking import (
    random_block_mask,
    random_block_mask_image,
    random_grid_token_mask,
    random_inverse_block_mask,
    random_prefix_mask,
    random_token_mask,
)
from fastssl.models._utils.momentum import (
    _no_grad_trunc_normal,
    activate_requires_grad,
    deactivate_drop_path,
    deactivate_requires_grad,
    momentum_copy,
    normalize_weight,
    update_momentum,
)
from fastssl.models._utils.positional import (
    get_1d_sine_cosine_positional_embedding_from_positions,
    get_2d_sincos_pos_embed,
    get_2d_sine_cosine_positional_embedding,
    get_2d_sine_cosine_positional_embedding_from_grid,
    initialize_2d_sine_cosine_positional_embedding,
    initialize_learnable_positional_embedding,
    initialize_positional_embedding,
    normalize_mean_var,
)
from fastssl.models._utils.shuffle import (
    batch_shuffle,
    batch_shuffle_distributed,
    batch_unshuffle,
    batch_unshuffle_distributed,
    concat_all_gather,
)
from fastssl.models._utils.similarity import (
    _mask_reduce,
    _mask_reduce_batched,
    most_similar_index,
    nearest_neighbors,
    pool_masked,
    select_most_similar,
)
from fastssl.models._utils.tokens import (
    apply_masks,
    expand_index_like,
    get_at_index,
    mask_at_index,
    mask_bool,
    patchify,
    prepend_class_token,
    repeat_interleave_batch,
    repeat_token,
    set_at_index,
    unpatchify,
)
from fastssl.models._utils.weight_decay import NORM_LAYERS, get_weight_decay_parameters

# LightlySSL's private name of the same tuple, for code that imports it.
_NORM_LAYERS = NORM_LAYERS

__all__ = [
    "NORM_LAYERS",
    "_NORM_LAYERS",
    "_mask_reduce",
    "_mask_reduce_batched",
    "_no_grad_trunc_normal",
    "activate_requires_grad",
    "add_stochastic_depth_to_blocks",
    "apply_masks",
    "batch_shuffle",
    "batch_shuffle_distributed",
    "batch_unshuffle",
    "batch_unshuffle_distributed",
    "concat_all_gather",
    "deactivate_drop_path",
    "deactivate_requires_grad",
    "expand_index_like",
    "get_1d_sine_cosine_positional_embedding_from_positions",
    "get_2d_sincos_pos_embed",
    "get_2d_sine_cosine_positional_embedding",
    "get_2d_sine_cosine_positional_embedding_from_grid",
    "get_at_index",
    "get_named_leaf_modules",
    "get_weight_decay_parameters",
    "initialize_2d_sine_cosine_positional_embedding",
    "initialize_learnable_positional_embedding",
    "initialize_positional_embedding",
    "mask_at_index",
    "mask_bool",
    "momentum_copy",
    "most_similar_index",
    "nearest_neighbors",
    "normalize_mean_var",
    "normalize_weight",
    "patchify",
    "pool_masked",
    "prepend_class_token",
    "random_block_mask",
    "random_block_mask_image",
    "random_grid_token_mask",
    "random_inverse_block_mask",
    "random_prefix_mask",
    "random_token_mask",
    "repeat_interleave_batch",
    "repeat_token",
    "select_most_similar",
    "set_at_index",
    "unpatchify",
    "update_drop_path_rate",
    "update_momentum",
]
