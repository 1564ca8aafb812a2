"""Settings shared by the trainer tests: a 2-layer, 32-wide random BERT with the default vocabulary."""

TINY_MODEL = [
    "model.init=scratch",
    "model.hidden_size=32",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.max_length=64",
]
