"""Training and evaluation entry points: ``python -m train.finetune``, ``python -m train.evaluate``."""
