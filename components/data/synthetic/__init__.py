"""Synthetic raw CTR logs drawn from a hidden logistic model with planted interactions.

The entry point is :func:`components.data.generate.generate`. This package holds its parts:

- :mod:`.blocks`: fixed-size row blocks and their seeded random streams (what makes the output
  independent of the write chunk size);
- :mod:`.zipf` and :mod:`.hexcodes`: Zipf value draws and their 8-hex-character spellings;
- :mod:`.planted`: the hidden logistic model (first-order weights, pairwise low-rank and trilinear
  interaction terms) and how it is built and calibrated;
- :mod:`.base`: the contract one synthetic format fulfils, :mod:`.criteo`, :mod:`.avazu` and
  :mod:`.movielens` the three formats;
- :mod:`.oracle`: the oracle AUC / LogLoss of the true click probabilities;
- :mod:`.atomic`: temp-path-then-rename file writing.
"""
