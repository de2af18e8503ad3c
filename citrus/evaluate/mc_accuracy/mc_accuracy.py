"""Multiple-choice accuracy for `evaluate`, usable offline: evaluate.load("<this folder>").

predictions: the extracted option letter per question ("" when none was extracted), or a list of
letters per question when several answers were sampled; references: the gold letters.
Returns accuracy (pass@1, averaged over samples), a 95% percentile-bootstrap interval, the
invalid-answer rate, n, and with samples the majority-vote accuracy.
"""

import datasets
import evaluate

from citrus.evaluate.metrics import score

_DESCRIPTION = __doc__
_CITATION = (
    "Efron & Tibshirani (1993), An Introduction to the Bootstrap; "
    "Wang et al. (2023), Self-Consistency."
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION)
class McAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("string")),
                        "references": datasets.Value("string"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, seed: int = 0):
        samples = [p if isinstance(p, list) else [p] for p in predictions]
        samples = [[a or None for a in answers] for answers in samples]
        return score(samples, list(references), seed=seed)
