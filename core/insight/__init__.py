"""Insight: what a trained model does. Prediction with the run's own preprocessing (`predict`), scoring on a
dataset with its mistakes and confusions (`evaluate`), where it looks (Grad-CAM, saliency and integrated gradients
through Captum, `explain`), feature maps and embeddings (`activations`), and the check that says when an image is
unlike anything it was trained on (`ood`).
"""
