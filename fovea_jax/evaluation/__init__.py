"""Evaluation: seqio metric functions and a `seqio.Evaluator` runner."""
