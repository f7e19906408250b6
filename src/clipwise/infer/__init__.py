"""Inference with trained models: the deep-model predictor (:mod:`.predictor`), evaluation of a run on a split
or another manifest (:mod:`.evaluate`) and ``evaluate --recompute`` (:mod:`.recompute`)."""
