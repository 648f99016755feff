"""The operation families a cell node may use, by name; one line per family.

Adding a family: a module here with its :class:`~rosearch.search_space.families.spec.OpFamily`
(grammar, labels, parameters, FLOPs, builder), its line below, and its name in
:data:`rosearch.choices.OP_FAMILIES` (what the config validates against; ``tests/test_choices.py``
checks the two agree). A family that needs a new kind of ``torch.nn.Module`` adds that block to
:mod:`rosearch.student.ops` and to :class:`~rosearch.search_space.families.spec.OpBlocks`.
"""

from __future__ import annotations

from rosearch.search_space.families import attn, avgpool, conv, dilconv, ffn, glu, identity, maxpool, sepconv
from rosearch.search_space.families.spec import LabelGrid, OpBlocks, OpFamily, OpSpec

FAMILIES: dict[str, OpFamily] = {
    family.name: family
    for family in (
        attn.FAMILY,
        conv.FAMILY,
        sepconv.FAMILY,
        dilconv.FAMILY,
        glu.FAMILY,
        ffn.FAMILY,
        identity.FAMILY,
        maxpool.FAMILY,
        avgpool.FAMILY,
    )
}

__all__ = ["FAMILIES", "LabelGrid", "OpBlocks", "OpFamily", "OpSpec"]
