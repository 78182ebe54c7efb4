"""Models: what a learner trains. The presets and their recipes (`presets`), the layer-spec builder
(`layers`), torchvision's networks with their weights, heads and freezing (`backbones`, `pretrained`), the airbench
speedrun net (`speedrun`), `build()`, the one way anything makes a model (`build`), the layer table with shapes,
parameters and MACs (`inspect`), and how test images are scored with test-time augmentation (`scoring`).
"""
