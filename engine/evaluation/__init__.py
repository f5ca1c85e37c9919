"""Sample-quality evaluation: feature extractors, FID / KID / Inception Score / precision-recall,
cached reference statistics, and the data-set classifier that `classifier:PATH` features come from.

    features.py    inception | classifier:PATH  → (features, logits) of uint8 images
    scores.py      FID, KID, IS (torchmetrics, float64) and improved precision/recall (torch-fidelity)
    reference.py   a data set's features, computed once per (data set, split, size, extractor) and cached
    evaluate.py    samples or the real test split → every metric; the loop's hook every eval.every steps
    classifier.py  the ResNet-9 classifier and its checkpoint format; classifier_training.py trains it
"""
