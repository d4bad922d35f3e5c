"""Experiments: the three papers' full-scale runs (gin) and the CPU-scale study.

`experiments/<paper>/*.gin` are the papers' runs; `lm_study.py` and
`summarization_study.py` define the CPU-scale study as ml_collections configs,
run by `python -m experiments.run_study --config=experiments/lm_study.py`.
"""
