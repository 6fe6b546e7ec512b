"""DeiT as ``model_type: deit`` (the distilled checkpoints): ViT's encoder under the
``deit.`` prefix, plus a distillation token and its classifier.

The signals are ViT's (see :mod:`zoo.families.vit`), with::

    embeddings.distillation     (one, one, hidden)          embedding
    embeddings.position         (one, positions, hidden)    positions = patches + 2
    classifier / cls_classifier / distillation_classifier.{weight,bias}
                                (classes, hidden)           head, optional

DeiT checkpoints without distillation are published as ``model_type: vit`` and read by
the vit family.
"""

from __future__ import annotations

from zoo.families._common import Rule, linear, rule
from zoo.families.vit import ViTFamily


class DeiTFamily(ViTFamily):
    name = "deit"
    model_types = ("deit",)
    base_prefix = "deit"
    base_archs = frozenset({"DeiTModel"})
    extra_tokens = 2  # cls and distillation

    def encoder_rules(self) -> list[Rule]:
        token = ("one", "one", "hidden")
        return [
            *super().encoder_rules(),
            rule("embeddings.distillation_token", "embeddings.distillation", token, "embedding"),
        ]

    def head_rules(self) -> list[Rule]:
        top = dict(scope="top", required=False, kind="head")
        return [
            # DeiTForImageClassification; the WithTeacher model has the other two.
            *linear("classifier", "classifier", "classes", "hidden", **top),
            *linear("cls_classifier", "cls_classifier", "classes", "hidden", **top),
            *linear(
                "distillation_classifier", "distillation_classifier", "classes", "hidden", **top
            ),
        ]
