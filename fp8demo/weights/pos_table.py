"""Model surgery on the transformer's positional table: keep only the central part the largest image can reach.

The patch embedder holds a persistent table of pos_embed_max_size^2 x width (0.42 GiB in bf16 for Medium) although a
1024 px image reads a central 64 x 64 crop. diffusers crops at offset (max - h) // 2; with a table of side c cut from
the centre of one of side m, that offset becomes (m - c) / 2 + (c - h) // 2, the same number when m - c is even. So
outputs are bit-identical and the bytes go.
"""

from __future__ import annotations


def cropped_side(old: int, patch: int, max_side: int) -> int | None:
    """Side of the central crop of a positional table of side `old` covering `max_side` px; None if no smaller."""
    need = -(-max_side // (8 * patch))  # patches a side at the largest size (VAE factor 8)
    new = need + (old - need) % 2  # keep old - new even, so the crop offsets compose exactly
    return new if new < old else None


def crop(transformer, max_side: int) -> tuple[int, int] | None:
    """Crop a loaded transformer's table to cover `max_side`; (old, new) sides, or None when nothing was cut."""
    pe = getattr(transformer, "pos_embed", None)
    old = getattr(pe, "pos_embed_max_size", None)
    if pe is None or old is None or getattr(pe, "pos_embed", None) is None:
        return None
    new = cropped_side(old, transformer.config.patch_size, max_side)
    if new is None:
        return None
    width = pe.pos_embed.shape[-1]
    table = pe.pos_embed.reshape(1, old, old, width)
    start = (old - new) // 2
    cropped = table[:, start : start + new, start : start + new, :].reshape(1, new * new, width)
    _keep(transformer, cropped.clone(), old, new)
    return old, new


def _keep(transformer, table, old: int, new: int) -> None:
    pe = transformer.pos_embed
    pe.register_buffer("pos_embed", table, persistent=True)
    pe.pos_embed_max_size = new
    transformer.pos_embed_crop = (old, new)  # for the report when the crop happened while loading
    if hasattr(transformer, "register_to_config"):  # a saved copy must say how large its table is
        transformer.register_to_config(pos_embed_max_size=new)


def central_table(patch_embed, side: int):
    """The central `side` x `side` part of a diffusers PatchEmbed's sin-cos table ([1, side^2, width], float32),
    computed without the rest: the result equals cropping the whole table, which Medium's constructor builds at
    384 x 384 through float64 intermediates (3.8 GiB of peak memory for a 96 x 96 crop).

    diffusers' own get_2d_sincos_pos_embed makes each table entry from its grid coordinate alone (coordinate times
    frequency, then sin and cos), so the same coordinates through diffusers' own get_2d_sincos_pos_embed_from_grid
    give the same entries. The coordinates are computed as that function computes them, for the whole side (a few
    hundred numbers), and sliced.
    """
    import torch
    from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid

    old = patch_embed.pos_embed_max_size
    width = patch_embed.proj.out_channels
    start = (old - side) // 2
    with torch.device("cpu"):  # also when called inside a meta-device construction
        coords = torch.arange(old, dtype=torch.float32) / (old / patch_embed.base_size)
        coords = (coords / patch_embed.interpolation_scale)[start : start + side]
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=0).reshape(2, 1, side, side)
        return get_2d_sincos_pos_embed_from_grid(width, grid, output_type="pt").float().unsqueeze(0)


def build(transformer, max_side: int) -> tuple[int, int] | None:
    """Fill the table of a transformer constructed on the meta device: only its central crop covering `max_side`
    (see `crop`), or the whole table where no crop is smaller. Returns (old, new) sides when cropped, as `crop`."""
    pe = transformer.pos_embed
    old = pe.pos_embed_max_size
    new = cropped_side(old, transformer.config.patch_size, max_side)
    table = central_table(pe, new or old)
    if new is None:
        pe.register_buffer("pos_embed", table, persistent=True)
        return None
    _keep(transformer, table, old, new)
    return old, new


def table_elements(transformer, max_side: int) -> int:
    """Elements the transformer's table holds once cropped to `max_side` (the byte estimate before loading)."""
    pe = transformer.pos_embed
    old = pe.pos_embed_max_size
    side = cropped_side(old, transformer.config.patch_size, max_side) or old
    return pe.pos_embed.numel() // (old * old) * side * side
