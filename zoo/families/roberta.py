"""RoBERTa: BERT's encoder under the ``roberta.`` prefix with its own task heads.

The signals are BERT's (see :mod:`zoo.families.bert`); only the head names differ
(``lm_head.*`` for the masked LM, ``classifier.dense`` / ``classifier.out_proj`` for
sequence classification, which become ``classifier.dense`` and ``classifier.out``).
RoBERTa's position table has ``pad_token_id + 1`` extra rows; it is a fixed ``positions``
axis like BERT's.
"""

from __future__ import annotations

from zoo.families._common import Rule, linear, norm, rule
from zoo.families.bert import BertFamily


class RobertaFamily(BertFamily):
    name = "roberta"
    model_types = ("roberta",)
    base_prefix = "roberta"
    base_archs = frozenset({"RobertaModel"})

    def mlm_rules(self) -> list[Rule]:
        top = dict(scope="top", required=False)
        return [
            *linear("lm_head.dense", "mlm.transform", "hidden", "hidden", **top),
            *norm("lm_head.layer_norm", "mlm.norm", **top),
            rule("lm_head.bias", "mlm.bias", ("vocab",), "bias", **top),
            # Tied to embeddings.word / mlm.bias; present or absent, they round-trip.
            rule(
                "lm_head.decoder.weight", "mlm.decoder.weight", ("vocab", "hidden"), "head", **top
            ),
            rule("lm_head.decoder.bias", "mlm.decoder.bias", ("vocab",), "bias", **top),
            *linear("classifier.dense", "classifier.dense", "hidden", "hidden", **top),
            *linear(
                "classifier.out_proj", "classifier.out", "classes", "hidden", kind="head", **top
            ),
        ]
