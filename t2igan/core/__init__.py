"""What every layer shares: the weights format (:mod:`.weights`), atomic file writes
(:mod:`.fs`), device choice (:mod:`.device`), processes of a distributed run and mixed
precision (:mod:`.distributed`), and the typed config machinery (:mod:`.config`).

Imports nothing from the rest of the package except ``t2igan.T2IError``.
"""
