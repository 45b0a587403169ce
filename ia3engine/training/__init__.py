"""The trainer: a TrainSpec in, an adapter folder out.

spec (what to train) -> loading (the base model) -> run (one training run, top to bottom)
-> loop (the step loop) with tasks (batches, losses, evaluation per task), head, checkpoint,
card. Uses the method (ia3engine/) and the data pipeline (ia3engine/data/).
"""
