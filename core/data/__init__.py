"""Data: what a learner trains on. The data spec (`shapes`, `cifar10`, `imagefolder:PATH`) and the datasets it
names as uint8 tensors, decoded once from untrusted files and cached (`datasets`, `images`, `archive`); batches made,
augmented and normalized on the training device (`batches`); and your own classes, the Teachable-Machine-style
sets of pictures with the small-data recipe and the test split's caveat (`classes`).
"""
