"""A task's examples and what is computed over them: loading and tokenising (:mod:`.tasks`), ragged splits
and their batches (:mod:`.batching`), the search's validation slice (:mod:`.validation`) and a
classifier's predictions over a split (:mod:`.predictions`).

Nothing is re-exported here: a module that needs a name imports it from the module that defines it.
"""
