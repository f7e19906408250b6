"""Evaluation: metrics on arrays (:mod:`.metrics`, :mod:`.multilabel`), run and cross-validation reports
(:mod:`.report`, :mod:`.cv_report`) and leaderboards (:mod:`.compare`)."""
