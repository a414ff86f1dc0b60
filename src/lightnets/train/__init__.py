"""Training: recipes, the trainer loop, checkpoints, distributed runs, metrics.

>>> from lightnets.train import TrainConfig, get_recipe, train
>>> config = TrainConfig(model="shufflenet_v2", output="runs/fmnist", dataset="fashion-mnist",
...                      model_hparams={"width_mult": 0.5},
...                      recipe=get_recipe("cosine", epochs=5, lr=0.2))
>>> summary = train(config)          # doctest: +SKIP
"""

from lightnets.train.config import TrainConfig
from lightnets.train.evaluate import evaluate, evaluate_checkpoint
from lightnets.train.guard import TrainingDiverged
from lightnets.train.metrics import EvalResult
from lightnets.train.recipes import RECIPES, Recipe, get_recipe
from lightnets.train.resume import resume_config
from lightnets.train.trainer import Trainer, train

__all__ = [
    "RECIPES",
    "EvalResult",
    "Recipe",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "evaluate_checkpoint",
    "get_recipe",
    "resume_config",
    "train",
]
