"""Target kinds: what a training image's target is, one module per kind (``single``, ``multilabel``, ``ordinal``,
``regression``, ``topk``). Each kind owns the model's outputs, loss and activation, its prediction columns, its
scores, the post-processing fitted on the out-of-fold predictions, and how its submission cells are written and
checked (:class:`pipeline.targets.base.Kind`). The data side reads each kind's target off a labels file into the
catalogue's ``label`` (:func:`pipeline.data.labelling.read_target`) and stratifies its folds
(:func:`pipeline.data.folds.assign_folds`): the catalogue's contract is the spec's ``Target``.

A new kind is one module with a :class:`Kind` subclass, registered in :data:`KINDS`, and its branch in those two.
"""

from __future__ import annotations

from pipeline.targets.base import Kind
from pipeline.targets.multilabel import MultiLabel
from pipeline.targets.scalar import Ordinal, Regression
from pipeline.targets.single import Single, TopK

KINDS: dict[str, type[Kind]] = {k.name: k for k in (Single, MultiLabel, Ordinal, Regression, TopK)}


def kind_of(comp) -> Kind:
    """The target kind of a competition (:class:`pipeline.competitions.spec.Competition`)."""
    return KINDS[comp.target.kind](comp)


__all__ = ["KINDS", "Kind", "kind_of"]
