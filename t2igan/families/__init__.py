"""One module per model family; :mod:`t2igan.families.registry` is the one list of them."""
