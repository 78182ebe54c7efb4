"""Data: what a model learns from. The data spec (`shapes[:N]`, `cifar10`, `imagefolder:PATH`), parsed in one place
with the defaults it implies and its name in words (`spec`); the datasets it names as uint8 tensors, decoded once
from untrusted files and cached (`datasets`, `images`, `archive`); batches made, augmented and normalized on the
training device (`batches`); and your own classes, Teachable-Machine-style sets of pictures with the small-data
recipe and the test split's caveat (`classes`).
"""
