"""Models: what learns. The presets a learner picks from and the recipes they train best with (`presets`), the
layer-spec builder (`layers`), torchvision's networks with their weights, heads and freezing (`backbones`,
`pretrained`), the airbench-style speedrun net (`speedrun`), `build()`, the one way anything makes a model
(`build`), the layer table with shapes, parameters and MACs (`inspect`), and how test images are scored, with
test-time augmentation, the same in a run's test pass and in prediction (`scoring`).
"""
