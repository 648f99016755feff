"""Everything a run does once before its first candidate: the quick checks (:mod:`.preflight`), the
data, teacher and teacher outputs (:mod:`.inputs`), the input defenses' tables (:mod:`.defense`), and
the read-only :class:`~rosearch.prepare.search_inputs.SearchInputs` every candidate shares.

Nothing is re-exported here: a module that needs a name imports it from the module that defines it.
"""
