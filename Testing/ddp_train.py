"""Run by test_training_runtime under torchrun: one training run whose options come as JSON in argv[1]."""

import json
import sys

from MRISynthesisLib.training.trainer import TrainOptions, train

if __name__ == "__main__":
    train(TrainOptions(**json.loads(sys.argv[1])), progress=False)
